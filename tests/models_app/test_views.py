"""Settings > Models, the HTMX page: access, filters, actions through the services, errors."""

import re

import pytest
from django.test import Client
from django.utils import timezone

from models_app.models import ActiveModel, Operation, StoreScan
from tests.factories import (
    CollectionFactory,
    InstallationFactory,
    ModelFactory,
    OperationFactory,
)
from tests.htmx import toast

pytestmark = pytest.mark.django_db

PAGE = "/settings/models/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def card_url(key, action):
    return f"{PAGE}{key}/{action}/"


@pytest.fixture
def catalog():
    """Models of every type: one installed and active, one used by a collection, one failed."""
    bge = ModelFactory(
        key="bge-small",
        name="BGE small",
        type="embedding",
        recommended=True,
        download_size=134_400_000,
        memory_estimates={"float16": 66_800_000, "int8": 33_400_000},
    )
    minilm = ModelFactory(key="minilm", name="MiniLM L6", type="embedding", download_size=90_000)
    e5 = ModelFactory(key="e5-small", name="E5 small", type="embedding")
    qwen = ModelFactory(
        key="qwen2.5-7b-q4", name="Qwen2.5 7B", type="llm", gguf_file="q.gguf", allow_patterns=[]
    )
    rerank = ModelFactory(key="bge-rerank", name="BGE reranker", type="reranker")
    splade = ModelFactory(key="splade-v3", name="SPLADE v3", type="splade")
    InstallationFactory(model=bge, size_on_disk=133_000_000)
    InstallationFactory(model=e5, size_on_disk=120_000_000)
    ActiveModel.objects.create(type="embedding", model=bge)
    CollectionFactory(name="docs", embedding_model=e5)
    OperationFactory(
        model=minilm,
        state="failed",
        error_code="ERR_NETWORK",
        error_message="Connection reset by the hub.",
    )
    return {"bge": bge, "minilm": minilm, "e5": e5, "qwen": qwen, "rerank": rerank, "sp": splade}


# --- access -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", PAGE),
        ("get", f"{PAGE}header/"),
        ("get", card_url("minilm", "card")),
        ("get", card_url("bge-small", "delete")),
        ("post", card_url("minilm", "download")),
        ("post", card_url("bge-small", "activate")),
        ("post", card_url("bge-small", "delete")),
        ("post", f"{PAGE}operations/1/cancel/"),
        ("post", f"{PAGE}operations/1/retry/"),
    ],
)
def test_anonymous_goes_to_admin_login_and_staff_gets_403(catalog, user_client, method, path):
    response = getattr(Client(), method)(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")
    assert getattr(user_client, method)(path).status_code == 403
    assert not Operation.objects.filter(state="queued").exists()


def test_anonymous_htmx_request_redirects_the_whole_page(catalog):
    response = Client().get(PAGE, HTTP_HX_CURRENT_URL="http://testserver/settings/models/", **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/admin/login/?next=%2Fsettings%2Fmodels%2F"


def test_page_for_superuser(superuser_client, catalog):
    response = superuser_client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html and 'id="models-header"' in html and 'id="model-list"' in html
    # htmx is vendored, CSRF rides in hx-headers on <body>, the live status is on the page.
    assert "/static/vendor/htmx-2.0.11.min.js" in html and "unpkg" not in html
    assert "/static/modelyard/app.css" in html and "/static/modelyard/live.js" in html
    assert '<body hx-headers=\'{"X-CSRFToken": "' in html
    assert 'data-testid="live-status"' in html
    assert response["Vary"].find("HX-Request") >= 0


# --- tabs, search, status ---------------------------------------------------------------


def test_default_tab_is_embedding(superuser_client, catalog):
    html = superuser_client.get(PAGE).content.decode()
    assert 'id="model-bge-small"' in html and 'data-model="minilm"' in html
    assert 'data-model="qwen2.5-7b-q4"' not in html
    assert 'data-testid="tab-embedding"' in html
    # Tabs are links with real hrefs that htmx-swap the list and push the URL.
    assert 'href="/settings/models/?type=llm"' in html
    assert 'hx-get="/settings/models/?type=llm"' in html and 'hx-push-url="true"' in html


@pytest.mark.parametrize(
    "query, shown, hidden",
    [
        ("type=llm", ["qwen2.5-7b-q4"], ["bge-small", "bge-rerank"]),
        ("type=reranker", ["bge-rerank"], ["bge-small"]),
        ("type=splade", ["splade-v3"], ["bge-small"]),
        ("type=embedding&status=installed", ["bge-small", "e5-small"], ["minilm"]),
        ("type=embedding&status=available", ["minilm"], ["bge-small", "e5-small"]),
        ("type=embedding&q=mini", ["minilm"], ["bge-small", "e5-small"]),
        ("q=BGE", ["bge-small"], ["bge-rerank", "minilm"]),
    ],
)
def test_tabs_search_and_status_filter(superuser_client, catalog, query, shown, hidden):
    for headers in ({}, HTMX):
        html = superuser_client.get(f"{PAGE}?{query}", **headers).content.decode()
        for key in shown:
            assert f'data-model="{key}"' in html
        for key in hidden:
            assert f'data-model="{key}"' not in html


def test_htmx_request_returns_only_the_list_and_pushes_the_canonical_url(superuser_client, catalog):
    response = superuser_client.get(f"{PAGE}?type=llm&status=all&q=++qwen++&page=1", **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="model-list"')
    assert "<html" not in html and "models-header" not in html and 'id="filters"' not in html
    assert 'data-model="qwen2.5-7b-q4"' in html
    assert response["HX-Push-Url"] == "/settings/models/?type=llm&q=qwen"
    # The tab keeps the other filters; the hidden type belongs to the filter form.
    assert 'href="/settings/models/?type=embedding&amp;q=qwen"' in html
    assert '<input type="hidden" name="type" value="llm" form="filters">' in html


def test_full_page_keeps_the_state_in_the_controls(superuser_client, catalog):
    html = superuser_client.get(f"{PAGE}?type=embedding&status=installed&q=bge").content.decode()
    assert 'name="q" value="bge"' in html
    assert 'value="installed" data-testid="status-installed" checked' in html
    assert 'hx-trigger="input changed delay:250ms, search"' in html
    assert 'aria-current="page"' in html


def test_history_restore_gets_the_full_page(superuser_client, catalog):
    response = superuser_client.get(PAGE, HTTP_HX_HISTORY_RESTORE_REQUEST="true", **HTMX)
    assert "<html" in response.content.decode()


@pytest.mark.parametrize(
    "query", ["q=a%00b", "type=bogus", "status=nope", "page=abc", "page=-3", "q=" + "x" * 500]
)
def test_bad_filters_fall_back_instead_of_failing(superuser_client, catalog, query):
    response = superuser_client.get(f"{PAGE}?{query}")
    assert response.status_code == 200


def test_tab_counts_and_empty_state(superuser_client, catalog):
    html = superuser_client.get(f"{PAGE}?type=embedding&q=nothing-matches", **HTMX).content.decode()
    assert 'data-testid="empty"' in html and "No embedding models match" in html
    all_html = superuser_client.get(PAGE, **HTMX).content.decode()
    assert 'LLMs <span class="tab-count">1</span>' in all_html
    assert 'Embedding <span class="tab-count">3</span>' in all_html


def test_pagination_links(superuser_client, settings):
    ModelFactory.create_batch(61, type="llm")
    html = superuser_client.get(f"{PAGE}?type=llm", **HTMX).content.decode()
    assert html.count("<article ") == 60
    assert 'href="/settings/models/?type=llm&amp;page=2"' in html
    page_two = superuser_client.get(f"{PAGE}?type=llm&page=9", **HTMX).content.decode()
    assert page_two.count("<article ") == 1 and "Page 2 of 2" in page_two


# --- the card ---------------------------------------------------------------------------


def test_card_shows_sizes_collections_memory_badges_and_actions(superuser_client, catalog):
    html = superuser_client.get(card_url("bge-small", "card")).content.decode()
    assert html.lstrip().startswith("<article")
    assert 'id="model-bge-small"' in html and 'data-model="bge-small"' in html
    assert 'data-testid="active"' in html and 'data-testid="recommended"' in html
    assert "126.8\xa0MB on disk" in html
    assert 'data-testid="memory-table"' in html and "63.7\xa0MB" in html and "int8" in html
    assert 'data-testid="delete"' in html and 'href="/settings/models/bge-small/delete/"' in html
    assert 'data-testid="set-active"' not in html  # it is the active one

    e5 = superuser_client.get(card_url("e5-small", "card")).content.decode()
    assert 'data-testid="set-active"' in e5
    assert 'data-testid="in-use"' in e5 and "disabled" in e5 and "by docs" in e5
    assert 'data-testid="delete"' not in e5

    minilm = superuser_client.get(card_url("minilm", "card")).content.decode()
    assert "87.9\xa0KB download" in minilm
    assert 'data-testid="retry"' in minilm and 'data-testid="download"' not in minilm
    assert "ERR_NETWORK" in minilm and "Connection reset by the hub." in minilm

    qwen = superuser_client.get(card_url("qwen2.5-7b-q4", "card")).content.decode()
    assert 'data-testid="download"' in qwen and 'data-testid="retry"' not in qwen


def test_old_failure_of_an_installed_model_offers_no_retry(superuser_client, catalog):
    OperationFactory(model=catalog["e5"], state="failed", error_code="ERR_NETWORK")
    html = superuser_client.get(card_url("e5-small", "card")).content.decode()
    assert 'data-testid="retry"' not in html and "ERR_NETWORK" not in html


def test_reload_mid_download_shows_the_live_progress(superuser_client, catalog):
    op = OperationFactory(
        model=catalog["qwen"],
        state="running",
        bytes_done=512 * 1024**2,
        bytes_total=2 * 1024**3,
        speed=8 * 1024**2,
        eta_seconds=192,
    )
    html = superuser_client.get(f"{PAGE}?type=llm").content.decode()
    assert f'data-operation-id="{op.id}"' in html
    assert '<progress data-testid="progress" max="100" value="25"' in html
    assert "512.0\xa0MB of 2.0\xa0GB" in html and "8.0\xa0MB/s" in html
    assert "3 min 12 s left" in html and 'data-testid="cancel"' in html
    assert "Downloading" in html and 'data-testid="download"' not in html


# --- actions ----------------------------------------------------------------------------


def test_download_queues_an_operation_and_shows_progress(superuser_client, catalog):
    response = superuser_client.post(card_url("qwen2.5-7b-q4", "download"), **HTMX)
    assert response.status_code == 200
    op = Operation.objects.get(model=catalog["qwen"], kind="download")
    assert op.state == "queued"
    html = response.content.decode()
    assert html.lstrip().startswith('<article class="card is-busy" id="model-qwen2.5-7b-q4"')
    assert 'data-testid="progress"' in html and f'data-operation-id="{op.id}"' in html
    assert "Download queued" in html and 'data-testid="cancel"' in html
    header = html[html.index('<section id="models-header"') :].split(">")[0]
    assert 'hx-swap-oob="true"' in header
    assert toast(response) == {"level": "success", "message": "Download of Qwen2.5 7B queued."}

    again = superuser_client.post(card_url("qwen2.5-7b-q4", "download"), **HTMX)
    assert again.status_code == 200 and toast(again)["level"] == "info"
    assert Operation.objects.filter(model=catalog["qwen"]).count() == 1


def test_cancel_a_queued_download_then_retry_it(superuser_client, catalog):
    op = OperationFactory(model=catalog["qwen"], state="queued")
    response = superuser_client.post(f"{PAGE}operations/{op.id}/cancel/", **HTMX)
    assert response.status_code == 200
    op.refresh_from_db()
    assert op.state == "cancelled"
    html = response.content.decode()
    assert 'data-testid="retry"' in html and "ERR_CANCELLED" in html
    assert toast(response)["level"] == "info"

    response = superuser_client.post(f"{PAGE}operations/{op.id}/retry/", **HTMX)
    assert response.status_code == 200
    op.refresh_from_db()
    assert op.state == "queued"
    assert 'data-testid="progress"' in response.content.decode()
    assert toast(response)["level"] == "success"


def test_cancel_a_running_download_asks_the_worker(superuser_client, catalog):
    op = OperationFactory(model=catalog["qwen"], state="running", bytes_done=1, bytes_total=4)
    response = superuser_client.post(f"{PAGE}operations/{op.id}/cancel/", **HTMX)
    op.refresh_from_db()
    assert op.state == "running" and op.cancel_requested
    assert "Cancelling…" in response.content.decode()


def test_retry_the_failed_download(superuser_client, catalog):
    failed = Operation.objects.get(model=catalog["minilm"])
    response = superuser_client.post(f"{PAGE}operations/{failed.id}/retry/", **HTMX)
    assert response.status_code == 200
    failed.refresh_from_db()
    assert failed.state == "queued" and failed.error_code == ""
    assert 'data-testid="retry"' not in response.content.decode()


def test_set_active_switches_and_refreshes_the_previous_card(superuser_client, catalog):
    response = superuser_client.post(card_url("e5-small", "activate"), **HTMX)
    assert response.status_code == 200
    assert ActiveModel.objects.get(type="embedding").model == catalog["e5"]
    html = response.content.decode()
    assert html.lstrip().startswith('<article class="card is-active" id="model-e5-small"')
    # The previously active card comes out of band, without its badge.
    previous = html[html.index('id="model-bge-small"') :]
    assert 'hx-swap-oob="true"' in previous.split(">")[0]
    assert 'data-testid="set-active"' in previous.split("</article>")[0]
    assert toast(response) == {
        "level": "success",
        "message": "E5 small is now the active embedding model.",
    }


def test_delete_dialog_with_warnings_must_be_confirmed(superuser_client, catalog):
    response = superuser_client.get(card_url("bge-small", "delete"), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith("<dialog")
    assert 'data-testid="warnings"' in html and "active embedding model" in html
    assert "This cannot be undone" in html and 'data-testid="bytes-freed"' in html
    assert 'data-testid="confirm-delete"' in html and 'name="confirm" value="true"' in html

    # Posting without confirm=true deletes nothing and answers with the dialog.
    response = superuser_client.post(card_url("bge-small", "delete"), **HTMX)
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#dialog-slot" and response["HX-Reswap"] == "innerHTML"
    assert response["X-Modelyard-Error"] == "ERR_CONFIRM_REQUIRED"
    assert response.content.decode().lstrip().startswith("<dialog")
    assert not Operation.objects.filter(kind="delete").exists()

    response = superuser_client.post(card_url("bge-small", "delete"), {"confirm": "true"}, **HTMX)
    assert response.status_code == 200
    op = Operation.objects.get(kind="delete")
    assert op.model == catalog["bge"] and op.state == "queued"
    assert "Delete queued" in response.content.decode()
    assert toast(response)["level"] == "success"


def test_delete_without_warnings_is_queued(superuser_client, catalog):
    InstallationFactory(model=catalog["qwen"])
    response = superuser_client.post(card_url("qwen2.5-7b-q4", "delete"), **HTMX)
    assert response.status_code == 200
    assert Operation.objects.get(kind="delete").model == catalog["qwen"]


def test_blocked_delete_has_no_confirm_button(superuser_client, catalog):
    html = superuser_client.get(card_url("e5-small", "delete"), **HTMX).content.decode()
    assert 'data-testid="blocked"' in html and "In use." in html and "docs" in html
    assert 'data-testid="confirm-delete"' not in html

    response = superuser_client.post(card_url("e5-small", "delete"), {"confirm": "true"}, **HTMX)
    assert response.status_code == 409
    html = response.content.decode()
    assert 'data-testid="error"' in html and "ERR_IN_USE" in html and "docs" in html
    assert 'data-testid="in-use"' in html
    assert toast(response)["level"] == "error"
    assert not Operation.objects.filter(kind="delete").exists()


def test_delete_page_without_javascript(superuser_client, catalog):
    html = superuser_client.get(card_url("bge-small", "delete")).content.decode()
    assert "<html" in html and "<dialog" in html and " open>" in html.split("<dialog")[1][:200]


# --- errors -----------------------------------------------------------------------------


def test_activate_a_model_that_is_not_installed(superuser_client, catalog):
    response = superuser_client.post(card_url("qwen2.5-7b-q4", "activate"), **HTMX)
    assert response.status_code == 409
    assert response["X-Modelyard-Error"] == "ERR_NOT_INSTALLED"
    html = response.content.decode()
    assert html.lstrip().startswith("<article")
    assert 'data-testid="error"' in html and "ERR_NOT_INSTALLED" in html
    assert "not installed; download it before activating it" in html
    assert toast(response)["level"] == "error"
    assert toast(response)["message"].startswith("ERR_NOT_INSTALLED: ")
    assert not ActiveModel.objects.filter(type="llm").exists()


def test_retry_a_running_operation_is_invalid_state(superuser_client, catalog):
    op = OperationFactory(model=catalog["qwen"], state="running")
    response = superuser_client.post(f"{PAGE}operations/{op.id}/retry/", **HTMX)
    assert response.status_code == 409
    assert "ERR_INVALID_STATE" in response.content.decode()


def test_download_while_a_delete_runs_is_already_running(superuser_client, catalog):
    OperationFactory(model=catalog["minilm"], kind="delete", state="running")
    response = superuser_client.post(card_url("minilm", "download"), **HTMX)
    assert response.status_code == 409
    assert response["X-Modelyard-Error"] == "ERR_ALREADY_RUNNING"


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", card_url("no-such-model", "download")),
        ("post", card_url("no-such-model", "activate")),
        ("get", card_url("no-such-model", "card")),
        ("get", card_url("no-such-model", "delete")),
        ("post", f"{PAGE}operations/999999/cancel/"),
        ("post", f"{PAGE}operations/999999/retry/"),
    ],
)
def test_unknown_model_or_operation_is_404_with_a_toast(superuser_client, catalog, method, path):
    response = getattr(superuser_client, method)(path, **HTMX)
    assert response.status_code == 404
    assert response["HX-Reswap"] == "none"
    assert toast(response)["message"].startswith("ERR_NOT_FOUND: ")


@pytest.mark.parametrize("key", ["Not-A-Key", "a%00b", "a%2Fb", "-x"])
def test_malformed_key_is_a_plain_404(superuser_client, catalog, key):
    assert superuser_client.get(f"{PAGE}{key}/card/").status_code == 404
    assert superuser_client.post(f"{PAGE}{key}/download/", **HTMX).status_code == 404


def test_wrong_method_is_405(superuser_client, catalog):
    assert superuser_client.get(card_url("minilm", "download")).status_code == 405
    assert superuser_client.post(card_url("minilm", "card")).status_code == 405


def test_without_htmx_an_action_redirects_back_with_a_message(superuser_client, catalog):
    response = superuser_client.post(card_url("qwen2.5-7b-q4", "activate"))
    assert response.status_code == 302
    assert response["Location"] == "/settings/models/?type=llm#model-qwen2.5-7b-q4"
    html = superuser_client.get(response["Location"]).content.decode()
    assert 'data-testid="toast" data-level="error"' in html and "ERR_NOT_INSTALLED" in html

    response = superuser_client.post(card_url("qwen2.5-7b-q4", "download"))
    assert response.status_code == 302 and Operation.objects.filter(model=catalog["qwen"])
    # A delete that needs confirmation goes to the confirmation page.
    response = superuser_client.post(card_url("bge-small", "delete"))
    assert response["Location"] == "/settings/models/bge-small/delete/"


# --- CSRF -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        card_url("qwen2.5-7b-q4", "download"),
        card_url("bge-small", "activate"),
        card_url("bge-small", "delete"),
        f"{PAGE}operations/1/cancel/",
    ],
)
def test_posts_need_the_csrf_token(superuser, catalog, path):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    assert client.post(path, {"confirm": "true"}, **HTMX).status_code == 403
    assert not Operation.objects.filter(kind__in=["download", "delete"], state="queued").exists()


def test_the_token_from_hx_headers_is_accepted(superuser, catalog):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    html = client.get(PAGE).content.decode()
    token = html.split('"X-CSRFToken": "')[1].split('"')[0]
    response = client.post(card_url("qwen2.5-7b-q4", "download"), HTTP_X_CSRFTOKEN=token, **HTMX)
    assert response.status_code == 200
    assert Operation.objects.filter(model=catalog["qwen"], state="queued").exists()


# --- header -----------------------------------------------------------------------------


def test_header_shows_curated_and_other_bytes_and_free_disk(superuser_client, catalog):
    StoreScan.objects.create(
        scanned_at=timezone.now(),
        managed_bytes=3 * 1024**3,
        unmanaged_bytes=1024**3,
        partial_bytes=512 * 1024**2,
    )
    for response in (superuser_client.get(PAGE), superuser_client.get(f"{PAGE}header/")):
        html = re.sub(r"[ \n]+", " ", response.content.decode())  # not \xa0
        assert "3.0\xa0GB</strong> used by curated models" in html
        assert "1.5\xa0GB</strong> by other downloads" in html
        assert 'data-testid="free-disk"' in html and "free on disk" in html
    header = superuser_client.get(f"{PAGE}header/").content.decode()
    assert header.lstrip().startswith('<section id="models-header"')


# --- query counts -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 50])
def test_page_query_count_is_independent_of_size(superuser_client, django_assert_num_queries, n):
    models = ModelFactory.create_batch(n, type="embedding")
    for m in models[::3]:
        InstallationFactory(model=m)
    for m in models[1::4]:
        OperationFactory(model=m, state="failed", error_code="ERR_NETWORK")
    for m in models[2::5]:
        OperationFactory(model=m, state="running", bytes_done=1, bytes_total=10)
    CollectionFactory(embedding_model=models[0])
    CollectionFactory(embedding_model=models[3])
    ActiveModel.objects.create(type="embedding", model=models[0])
    # session, user, count, page ids, rows, collections, operations, tab counts
    with django_assert_num_queries(8):
        response = superuser_client.get(PAGE, **HTMX)
    assert response.content.decode().count("<article ") == n
    # ... and the header: latest scan, installed count, unmanaged repos; and the Runtime
    # panel: its instances, the live ones per host, the supervisors (the cards use its rows)
    with django_assert_num_queries(14):
        superuser_client.get(f"{PAGE}?status=installed&q=model")


# --- admin ------------------------------------------------------------------------------


def test_admin_operation_list_has_live_progress_cells(superuser_client, catalog):
    op = OperationFactory(model=catalog["qwen"], state="running", bytes_done=50, bytes_total=200)
    html = superuser_client.get("/admin/models_app/operation/").content.decode()
    assert f'<span class="op-progress" data-operation-id="{op.id}" data-state="running">' in html
    assert "25% (50\xa0bytes of 200\xa0bytes)" in html
    assert "/ws/live/" in html


def test_admin_model_page_links_to_the_card(superuser_client, catalog):
    html = superuser_client.get(f"/admin/models_app/model/{catalog['qwen'].pk}/change/").content
    assert b'href="/settings/models/?type=llm#model-qwen2.5-7b-q4"' in html


# --- a prune is shown in the header, and cancelled from there ----------------------------


def test_a_running_prune_shows_in_the_header_and_cancels_from_it(superuser_client):
    prune = Operation.objects.create(
        kind="prune", state="running", bytes_done=1024, bytes_total=4096
    )
    header = superuser_client.get("/settings/models/header/").content.decode()
    line = header[header.index('data-testid="store-operation"') :]
    assert f'data-operation-id="{prune.pk}"' in line
    assert "Prune of the models store: running, 1.0\xa0KB of 4.0\xa0KB freed" in line
    response = superuser_client.post(f"/settings/models/operations/{prune.pk}/cancel/", **HTMX)
    assert response.status_code == 200
    assert toast(response) == {
        "level": "info",
        "message": "Prune of the models store stops after this delete.",
    }
    assert "stopping after the current delete" in response.content.decode()
    assert Operation.objects.get(pk=prune.pk).cancel_requested


def test_a_queued_prune_cancelled_from_the_header_ends_at_once(superuser_client):
    prune = Operation.objects.create(kind="prune", state="queued")
    response = superuser_client.post(f"/settings/models/operations/{prune.pk}/cancel/", **HTMX)
    assert toast(response)["message"] == "Prune of the models store cancelled."
    assert Operation.objects.get(pk=prune.pk).state == "cancelled"
    assert 'data-testid="store-operation"' not in response.content.decode()
