"""Settings > Models and the runtime: the Runtime panel, Load / Unload / Try it on the cards.

The actions go through services/runtime/; a runtime supervisor is stood for by its
heartbeat row (the loads they queue are claimed by none here: tests/browser and
tests/runtime run real ones), a loaded model by its instance row.
"""

import os
from datetime import timedelta

import gguf
import numpy as np
import pytest
from django.test import Client
from django.utils import timezone

from models_app.models import Operation, ProcessHeartbeat, RuntimeInstance
from models_app.runtime.host import host_facts
from tests.factories import InstallationFactory, ModelFactory, OperationFactory
from tests.htmx import toast
from tests.runtime_helpers import install_gguf

pytestmark = pytest.mark.django_db

PAGE = "/settings/models/"
HTMX = {"HTTP_HX_REQUEST": "true"}
MiB = 1024**2


def url(key, action):
    return f"{PAGE}{key}/{action}/"


def tiny_gguf(path):
    """Write a small but valid GGUF file (a llama header, one tensor)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(512)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_feed_forward_length(16)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_file(tmp_path):
    return tiny_gguf(tmp_path / "tiny.gguf")


def gguf_entry(key, *, type="llm", name=None):
    return ModelFactory(
        key=key, name=name or key.title(), type=type, repo_id=f"acme/{key}-GGUF",
        gguf_file=f"{key}.gguf", allow_patterns=[],
    )  # fmt: skip


@pytest.fixture
def catalog(settings, tiny_file):
    """An installed GGUF LLM and embedding model, one not installed, a safetensors model."""
    llm = gguf_entry("tiny-llm", name="Tiny LLM")
    install_gguf(llm, tiny_file, settings.MODELS_HUB_DIR)
    embed = gguf_entry("tiny-embed", type="embedding", name="Tiny embed")
    install_gguf(embed, tiny_file, settings.MODELS_HUB_DIR)
    absent = gguf_entry("absent-llm", name="Absent LLM")
    safetensors = ModelFactory(key="st-embed", name="ST embed", type="embedding")
    InstallationFactory(model=safetensors)
    splade = ModelFactory(key="splade-x", name="SPLADE x", type="splade")
    return {"llm": llm, "embed": embed, "absent": absent, "st": safetensors, "splade": splade}


def supervisor(host="test-host", **facts):
    """Stand for a runtime supervisor: its fresh heartbeat with the host's facts."""
    now = timezone.now()
    return ProcessHeartbeat.objects.create(
        role="runtime", host=host, pid=os.getpid(), pgid=os.getpid(), started_at=now,
        beat_at=now, facts={**host_facts(), **facts},
    )  # fmt: skip


@pytest.fixture
def runtime_host():
    return supervisor()


def instance(model, **fields):
    now = timezone.now()
    values = {
        "host": "test-host", "state": "ready", "pid": 4242, "port": 40123, "secret": "s",
        "n_ctx": 4096, "n_threads": 2, "keep_alive": 300, "memory_estimate": 300 * MiB,
        "rss": 312 * MiB, "loaded_at": now, "load_seconds": 0.93,
        "expires_at": now + timedelta(seconds=300), "requests_served": 3, "in_flight": 0,
    }  # fmt: skip
    values.update(fields)
    return RuntimeInstance.objects.create(model=model, **values)


def row(panel, key):
    """Return the Runtime panel's row of one model (its <tr> to its </tr>)."""
    start = panel.index(f'data-instance-model="{key}"')
    start = panel.rindex("<tr", 0, start)
    return panel[start : panel.index("</tr>", start)]


def section(html, testid):
    """Return the element that starts with data-testid=<testid> (its opening up to 2 kB)."""
    start = html.index(f'data-testid="{testid}"')
    return html[html.rindex("<", 0, start) : start + 2000]


# --- access -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", f"{PAGE}runtime/"),
        ("post", url("tiny-llm", "load")),
        ("post", url("tiny-llm", "unload")),
        ("get", url("tiny-llm", "try")),
    ],
)
def test_anonymous_goes_to_login_and_staff_gets_403(catalog, user_client, method, path):
    response = getattr(Client(), method)(path)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert getattr(user_client, method)(path).status_code == 403
    assert not Operation.objects.exists()


@pytest.mark.parametrize("path", [url("tiny-llm", "load"), url("tiny-llm", "unload")])
def test_runtime_posts_need_the_csrf_token(superuser, catalog, runtime_host, path):
    instance(catalog["llm"])
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    assert client.post(path, **HTMX).status_code == 403
    assert not Operation.objects.exists()


def test_wrong_methods_are_405(superuser_client, catalog):
    assert superuser_client.get(url("tiny-llm", "load")).status_code == 405
    assert superuser_client.get(url("tiny-llm", "unload")).status_code == 405
    assert superuser_client.post(url("tiny-llm", "try")).status_code == 405
    assert superuser_client.post(f"{PAGE}runtime/").status_code == 405


# --- the Runtime panel ------------------------------------------------------------------


def test_panel_without_a_runtime_supervisor_says_nothing_can_load(superuser_client, catalog):
    html = superuser_client.get(PAGE).content.decode()
    panel = section(html, "runtime-panel")
    assert 'data-testid="runtime-no-host"' in panel and "manage.py run" in panel
    assert 'data-testid="runtime-empty"' in panel and "No model is loaded" in panel


def test_panel_lists_what_is_loaded_on_every_host(superuser_client, catalog, runtime_host):
    supervisor("second-host")
    instance(catalog["llm"])
    instance(
        catalog["embed"], host="second-host", keep_alive=-1, expires_at=None, in_flight=2,
        requests_served=11, n_ctx=2048, n_threads=4, rss=None,
    )  # fmt: skip
    page = superuser_client.get(PAGE).content.decode()
    assert page.count('data-testid="runtime-instance"') == 2
    panel = superuser_client.get(f"{PAGE}runtime/").content.decode()
    assert panel.lstrip().startswith('<section id="runtime-panel"')
    assert panel.count('data-testid="runtime-instance"') == 2
    llm, embed = row(panel, "tiny-llm"), row(panel, "tiny-embed")
    assert "Tiny LLM" in llm and "test-host" in llm
    assert "Ready" in llm and "in 0.93 s" in llm
    assert "300.0\xa0MB / 312.0\xa0MB" in llm and "(+4%)" in llm
    assert ">4096<" in llm and ">2<" in llm and ">3<" in llm
    assert 'data-expires-in="' in llm and ("in 4 min" in llm or "in 5 min" in llm)
    assert 'data-testid="runtime-unload"' in llm
    assert "second-host" in embed and "never" in embed and ">11<" in embed and ">2<" in embed
    assert "300.0\xa0MB / —" in embed and 'data-expires-in="' not in embed


def test_panel_shows_the_error_of_a_failed_instance_without_unload(
    superuser_client, catalog, runtime_host
):
    instance(
        catalog["llm"], state="failed", port=None, expires_at=None, error_code="ERR_INTERNAL",
        error_message="The runner of tiny-llm died (killed by SIGKILL); the next request loads it.",
    )  # fmt: skip
    panel = superuser_client.get(f"{PAGE}runtime/").content.decode()
    failed = row(panel, "tiny-llm")
    assert 'data-state="failed"' in failed and "Failed" in failed
    assert 'data-testid="runtime-error"' in failed and "ERR_INTERNAL" in failed
    assert "SIGKILL" in failed and 'data-testid="runtime-unload"' not in failed


def test_an_instance_serving_a_request_expires_after_it(superuser_client, catalog, runtime_host):
    instance(catalog["llm"], in_flight=1)
    serving = row(superuser_client.get(f"{PAGE}runtime/").content.decode(), "tiny-llm")
    assert "after its requests" in serving and 'data-expires-in="' not in serving


def test_a_stale_supervisor_is_marked(superuser_client, catalog, settings):
    beat = supervisor()
    ProcessHeartbeat.objects.filter(pk=beat.pk).update(beat_at=timezone.now() - timedelta(hours=1))
    panel = superuser_client.get(f"{PAGE}runtime/").content.decode()
    assert "is-stale" in panel and "no heartbeat lately" in panel


# --- the cards --------------------------------------------------------------------------


def test_runnable_installed_card_offers_load_and_try_it(superuser_client, catalog, runtime_host):
    html = superuser_client.get(url("tiny-llm", "card")).content.decode()
    assert 'data-runnable="true" data-runtime-state=""' in html
    assert 'data-testid="load"' in html and 'data-testid="try-it"' in html
    assert 'href="/settings/models/tiny-llm/try/"' in html and 'hx-target="#dialog-slot"' in html
    assert 'data-testid="unload"' not in html and 'data-testid="loaded"' not in html
    assert section(html, "runtime-state").split(">")[1].startswith("Not loaded")


def test_loaded_card_offers_unload_and_shows_where(superuser_client, catalog, runtime_host):
    instance(catalog["llm"])
    html = superuser_client.get(url("tiny-llm", "card")).content.decode()
    assert 'data-runtime-state="ready"' in html and 'data-testid="loaded"' in html
    assert 'data-testid="unload"' in html and 'data-testid="load"' not in html
    assert 'data-testid="try-it"' in html
    assert "Loaded on test-host" in html


def test_a_failed_runner_shows_on_the_card_with_load_again(superuser_client, catalog):
    instance(
        catalog["llm"], state="failed", error_code="ERR_INTERNAL", error_message="It died.",
    )  # fmt: skip
    html = superuser_client.get(url("tiny-llm", "card")).content.decode()
    assert 'data-runtime-state="failed"' in html and "Runner failed on test-host" in html
    assert 'data-testid="runtime-error"' in html and "It died." in html
    assert 'data-testid="load"' in html and 'data-testid="loaded"' not in html


def test_a_failed_load_shows_its_error_on_the_installed_card(superuser_client, catalog):
    OperationFactory(
        model=catalog["llm"], kind="load", state="failed", error_code="ERR_FORMAT",
        error_message="llama.cpp refused the file.",
    )  # fmt: skip
    html = superuser_client.get(url("tiny-llm", "card")).content.decode()
    assert "Load failed" in html and "ERR_FORMAT" in html and "llama.cpp refused" in html
    assert 'data-testid="load"' in html


@pytest.mark.parametrize("key", ["st-embed", "splade-x"])
def test_a_card_the_runtime_does_not_run_says_so(superuser_client, catalog, key):
    html = superuser_client.get(url(key, "card")).content.decode()
    assert 'data-runnable="false"' in html and 'data-testid="runtime-note"' in html
    assert "Not run by the built-in runtime" in html and "through the models store" in html
    for testid in ("load", "unload", "try-it"):
        assert f'data-testid="{testid}"' not in html


def test_a_runnable_card_not_installed_offers_only_download(superuser_client, catalog):
    html = superuser_client.get(url("absent-llm", "card")).content.decode()
    assert 'data-testid="download"' in html
    for testid in ("load", "try-it", "runtime-state", "runtime-note"):
        assert f'data-testid="{testid}"' not in html


def test_a_running_load_shows_as_loading_with_cancel(superuser_client, catalog):
    OperationFactory(model=catalog["llm"], kind="load", state="running")
    html = superuser_client.get(url("tiny-llm", "card")).content.decode()
    assert "Loading" in html and 'data-testid="cancel"' in html
    assert 'data-testid="load"' not in html


def test_a_running_unload_cannot_be_cancelled(superuser_client, catalog):
    instance(catalog["llm"], state="unloading")
    OperationFactory(model=catalog["llm"], kind="unload", state="running")
    html = superuser_client.get(url("tiny-llm", "card")).content.decode()
    assert "Unloading" in html and 'data-testid="cancel"' not in html


# --- Load -------------------------------------------------------------------------------


def test_load_queues_a_load_on_the_runtime_host(superuser_client, superuser, catalog, runtime_host):
    response = superuser_client.post(url("tiny-llm", "load"), **HTMX)
    assert response.status_code == 200
    op = Operation.objects.get(model=catalog["llm"], kind="load")
    assert op.state == "queued" and op.worker_host == "test-host" and op.created_by == superuser
    # The default n_ctx, capped at what the file was trained for (its header says 512).
    assert op.plan["n_ctx"] == 512 and op.plan["memory_estimate"] > 0
    html = response.content.decode()
    assert html.lstrip().startswith('<article class="card is-busy" id="model-tiny-llm"')
    assert "Load queued" in html and 'data-testid="cancel"' in html
    panel = html[html.index('<section id="runtime-panel"') :].split(">")[0]
    assert 'hx-swap-oob="true"' in panel
    assert 'id="models-header"' in html
    assert toast(response) == {"level": "success", "message": "Load of Tiny LLM queued."}
    assert not RuntimeInstance.objects.exists()  # the supervisor makes the instance

    again = superuser_client.post(url("tiny-llm", "load"), **HTMX)
    assert again.status_code == 200 and toast(again)["level"] == "info"
    assert Operation.objects.filter(kind="load").count() == 1


def test_load_of_a_loaded_model_renews_its_keep_alive(superuser_client, catalog, runtime_host):
    loaded = instance(catalog["llm"], expires_at=timezone.now() + timedelta(seconds=5))
    response = superuser_client.post(url("tiny-llm", "load"), **HTMX)
    assert response.status_code == 200
    assert toast(response) == {
        "level": "info",
        "message": "Tiny LLM is already loaded on test-host; its keep-alive starts again.",
    }
    loaded.refresh_from_db()
    assert loaded.expires_at > timezone.now() + timedelta(seconds=200)
    assert not Operation.objects.exists()
    assert 'data-testid="unload"' in response.content.decode()


def test_load_without_a_runtime_supervisor_is_unavailable(superuser_client, catalog):
    response = superuser_client.post(url("tiny-llm", "load"), **HTMX)
    assert response.status_code == 503
    assert response["X-Modelyard-Error"] == "ERR_UNAVAILABLE"
    assert response["HX-Retarget"] == '.card[data-model="tiny-llm"]'
    html = response.content.decode()
    assert 'data-testid="error"' in html and "No runtime supervisor is running" in html
    assert toast(response)["level"] == "error"
    assert not Operation.objects.exists()


def test_load_that_does_not_fit_is_refused_with_both_numbers(superuser_client, catalog):
    supervisor(budget_setting=1024)
    response = superuser_client.post(url("tiny-llm", "load"), **HTMX)
    assert response.status_code == 409
    assert response["X-Modelyard-Error"] == "ERR_INSUFFICIENT_RAM"
    message = toast(response)["message"]
    assert "needs about" in message and "for models" in message
    assert not Operation.objects.exists()


def test_load_of_a_safetensors_model_is_a_format_error(superuser_client, catalog, runtime_host):
    response = superuser_client.post(url("st-embed", "load"), **HTMX)
    assert response.status_code == 409
    assert response["X-Modelyard-Error"] == "ERR_FORMAT"
    assert "for use from other tools through the models store" in response.content.decode()


def test_load_of_a_model_not_installed(superuser_client, catalog, runtime_host):
    response = superuser_client.post(url("absent-llm", "load"), **HTMX)
    assert response.status_code == 409
    assert response["X-Modelyard-Error"] == "ERR_NOT_INSTALLED"


def test_load_while_a_delete_holds_the_model(superuser_client, catalog, runtime_host):
    OperationFactory(model=catalog["llm"], kind="delete", state="running")
    response = superuser_client.post(url("tiny-llm", "load"), **HTMX)
    assert response.status_code == 409
    assert response["X-Modelyard-Error"] == "ERR_ALREADY_RUNNING"
    assert not Operation.objects.filter(kind="load").exists()


def test_load_without_htmx_redirects_back_with_a_message(superuser_client, catalog, runtime_host):
    response = superuser_client.post(url("tiny-llm", "load"))
    assert response.status_code == 302
    assert response["Location"] == "/settings/models/?type=llm#model-tiny-llm"
    html = superuser_client.get(response["Location"]).content.decode()
    assert "Load of Tiny LLM queued." in html


# --- Unload -----------------------------------------------------------------------------


def test_unload_from_the_card_queues_an_unload_on_its_host(superuser_client, catalog):
    supervisor("second-host")
    instance(catalog["llm"], host="second-host")
    response = superuser_client.post(url("tiny-llm", "unload"), **HTMX)
    assert response.status_code == 200
    op = Operation.objects.get(kind="unload")
    assert op.model == catalog["llm"] and op.state == "queued" and op.worker_host == "second-host"
    html = response.content.decode()
    assert html.lstrip().startswith("<article") and "Unload queued" in html
    assert '<section id="runtime-panel"' in html
    assert toast(response) == {"level": "success", "message": "Unload of Tiny LLM queued."}


def test_unload_from_the_panel_answers_with_the_panel(superuser_client, catalog, runtime_host):
    instance(catalog["llm"])
    response = superuser_client.post(
        url("tiny-llm", "unload"), HTTP_HX_TARGET="runtime-panel", **HTMX
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="runtime-panel"')
    assert html.lstrip().split(">")[0].find("hx-swap-oob") < 0
    card = html[html.index('<article class="card') :].split(">")[0]
    assert 'hx-swap-oob="true"' in card and 'id="model-tiny-llm"' in card
    assert Operation.objects.filter(kind="unload", state="queued").exists()


def test_unload_of_a_model_not_loaded_is_invalid_state(superuser_client, catalog, runtime_host):
    response = superuser_client.post(url("tiny-llm", "unload"), **HTMX)
    assert response.status_code == 409
    assert response["X-Modelyard-Error"] == "ERR_INVALID_STATE"
    assert "tiny-llm is not loaded" in toast(response)["message"]
    assert not Operation.objects.exists()


@pytest.mark.parametrize("action", ["load", "unload", "try"])
def test_unknown_model_is_404_with_a_toast(superuser_client, catalog, action):
    method = superuser_client.get if action == "try" else superuser_client.post
    response = method(url("no-such-model", action), **HTMX)
    assert response.status_code == 404 and response["HX-Reswap"] == "none"
    assert toast(response)["message"].startswith("ERR_NOT_FOUND: ")


# --- Try it -----------------------------------------------------------------------------


def test_try_an_llm_offers_a_streamed_chat_and_a_completion(superuser_client, catalog):
    response = superuser_client.get(url("tiny-llm", "try"), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<dialog class="dialog dialog-wide" id="try-dialog"')
    assert "data-autoshow" in html and 'data-model-key="tiny-llm"' in html
    assert 'data-chat-url="/v1/chat/completions"' in html
    assert 'data-completions-url="/v1/completions"' in html
    assert 'data-try="generate"' in html and 'data-testid="try-mode-completion"' in html
    assert 'data-testid="try-rate"' in html and 'data-testid="try-ttft"' in html
    assert "Not loaded: the first request loads it" in html


def test_try_a_loaded_llm_says_where_it_runs(superuser_client, catalog):
    instance(catalog["llm"], n_ctx=2048)
    html = superuser_client.get(url("tiny-llm", "try"), **HTMX).content.decode()
    assert "Loaded on test-host (n_ctx 2048, 2 threads)" in html and 'max="2048"' in html


def test_try_an_embedding_model_compares_two_texts(superuser_client, catalog):
    html = superuser_client.get(url("tiny-embed", "try"), **HTMX).content.decode()
    assert 'data-try="similarity"' in html and 'data-embeddings-url="/v1/embeddings"' in html
    assert 'data-testid="try-text-a"' in html and 'data-testid="try-similarity"' in html
    assert 'data-try="generate"' not in html


def test_try_without_htmx_is_a_page_of_its_own(superuser_client, catalog):
    html = superuser_client.get(url("tiny-llm", "try")).content.decode()
    assert "<html" in html and "<dialog" in html and " open" in html.split("<dialog")[1][:400]
    assert "/static/modelyard/try.js" in html


def test_try_a_safetensors_model_is_a_format_error(superuser_client, catalog):
    response = superuser_client.get(url("st-embed", "try"), **HTMX)
    assert response.status_code == 409 and response["X-Modelyard-Error"] == "ERR_FORMAT"


def test_try_a_model_not_installed(superuser_client, catalog):
    response = superuser_client.get(url("absent-llm", "try"), **HTMX)
    assert response.status_code == 409 and response["X-Modelyard-Error"] == "ERR_NOT_INSTALLED"
    assert "download it before trying it" in toast(response)["message"]


# --- query counts -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 30])
def test_runnable_cards_cost_one_query_whatever_their_number(
    superuser_client, django_assert_num_queries, n
):
    models = [gguf_entry(f"gguf-{i:03d}") for i in range(n)]
    for m in models:
        InstallationFactory(model=m)
    for m in models[::2]:
        instance(m)
    for m in models[1::5]:
        instance(m, state="failed", error_code="ERR_INTERNAL")
    # session, user, count, page ids, rows, collections, operations, runtime, the hosts'
    # memory (each card's fit), tab counts
    with django_assert_num_queries(10):
        response = superuser_client.get(f"{PAGE}?type=llm", **HTMX)
    html = response.content.decode()
    assert html.count('data-runtime-state="ready"') == len(models[::2])
    # The full page: the cards take their runtime state from the panel's rows (and their
    # fit from one read of the hosts' memory).
    with django_assert_num_queries(15):
        response = superuser_client.get(f"{PAGE}?type=llm")
    assert response.content.decode().count('data-testid="runtime-instance"') == len(
        models[::2]
    ) + len(models[1::5])
