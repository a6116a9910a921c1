"""The runtime API and services without runner processes: every refusal, each status path."""

import os
from datetime import timedelta

import pytest
from django.utils import timezone

from models_app.models import Event, Operation, ProcessHeartbeat, RuntimeInstance
from models_app.selectors import model_usage
from models_app.services import operation_retry, operations_requeue
from models_app.services.runtime import runtime_orphans_fail
from tests.factories import ModelFactory
from tests.gguf_files import llama_metadata, write_gguf
from tests.runtime_helpers import install_gguf

API = "/api/v1"
GIB = 1024**3

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_gguf(tmp_path):
    return write_gguf(tmp_path / "tiny.gguf", metadata=llama_metadata())


def gguf_model(settings, source, **fields):
    defaults = {
        "type": "llm",
        "gguf_file": "model-q4_k_m.gguf",
        "allow_patterns": [],
        "context_window": 8192,
    }
    model = ModelFactory(**(defaults | fields))
    install_gguf(model, source, settings.MODELS_HUB_DIR)
    return model


def runtime_host(host="host-a", *, budget=16 * GIB, available=20 * GIB, beat_at=None):
    now = timezone.now()
    return ProcessHeartbeat.objects.create(
        role="runtime",
        host=host,
        pid=os.getpid(),
        started_at=now,
        beat_at=beat_at or now,
        facts={"ram_total": budget + 2 * GIB, "ram_available": available, "budget": budget,
               "reserve": 2 * GIB, "threads": 2, "max_loaded": 1},
    )  # fmt: skip


def test_runtime_lists_hosts_and_instances(superuser_client, settings, tiny_gguf):
    runtime_host()
    model = gguf_model(settings, tiny_gguf)
    RuntimeInstance.objects.create(
        model=model, host="host-a", state="ready", n_ctx=4096, keep_alive=300, secret="s", port=1
    )
    body = superuser_client.get(f"{API}/runtime").json()
    assert [h["host"] for h in body["hosts"]] == ["host-a"]
    assert body["hosts"][0]["loaded"] == 1 and body["hosts"][0]["budget"] == 16 * GIB
    [instance] = body["instances"]
    assert (instance["model"], instance["state"], instance["host"]) == (
        model.key,
        "ready",
        "host-a",
    )
    assert "secret" not in instance


def test_load_queues_an_operation_for_the_runtime_host(superuser_client, settings, tiny_gguf):
    runtime_host("host-b")
    model = gguf_model(settings, tiny_gguf)
    response = superuser_client.post(
        f"{API}/runtime/load",
        {"model": model.key, "keep_alive": 60},
        content_type="application/json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "loading" and body["operation"]["kind"] == "load"
    op = Operation.objects.get(pk=body["operation"]["id"])
    assert (op.state, op.worker_host, op.task_id) == ("queued", "host-b", "")
    assert op.plan["keep_alive"] == 60 and op.plan["n_ctx"] == 4096
    again = superuser_client.post(
        f"{API}/runtime/load", {"model": model.key}, content_type="application/json"
    )
    assert again.status_code == 200 and again.json()["operation"]["id"] == op.pk


def test_a_loaded_model_answers_200_and_renews_its_keep_alive(
    superuser_client, settings, tiny_gguf
):
    runtime_host()
    model = gguf_model(settings, tiny_gguf)
    RuntimeInstance.objects.create(
        model=model, host="host-a", state="ready", n_ctx=4096, keep_alive=300, secret="s", port=1
    )
    response = superuser_client.post(
        f"{API}/runtime/load",
        {"model": model.key, "keep_alive": -1},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["status"] == "loaded"
    assert response.json()["instance"]["keep_alive"] == -1
    assert response.json()["instance"]["expires_at"] is None


def test_a_safetensors_model_is_not_run_here(superuser_client):
    model = ModelFactory(type="embedding")
    response = superuser_client.post(
        f"{API}/runtime/load", {"model": model.key}, content_type="application/json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "ERR_FORMAT"
    assert "other tools through the models store" in response.json()["message"]


def test_a_model_not_installed_cannot_load(superuser_client):
    runtime_host()
    model = ModelFactory(type="llm", gguf_file="x.gguf", allow_patterns=[])
    response = superuser_client.post(
        f"{API}/runtime/load", {"model": model.key}, content_type="application/json"
    )
    assert response.status_code == 409 and response.json()["code"] == "ERR_NOT_INSTALLED"


def test_no_runtime_supervisor_is_503(superuser_client, settings, tiny_gguf):
    model = gguf_model(settings, tiny_gguf)
    runtime_host(beat_at=timezone.now() - timedelta(minutes=5))  # stale
    response = superuser_client.post(
        f"{API}/runtime/load", {"model": model.key}, content_type="application/json"
    )
    assert response.status_code == 503
    assert response.json()["code"] == "ERR_UNAVAILABLE"
    assert "manage.py runtime" in response.json()["message"]


def test_a_load_that_does_not_fit_names_both_numbers_and_a_smaller_model(
    superuser_client, settings, tmp_path
):
    # The same tiny weights; 64 layers of KV cache make the first one bigger.
    big_file = write_gguf(
        tmp_path / "big.gguf", metadata=llama_metadata(**{"llama.block_count": 64})
    )
    small_file = write_gguf(tmp_path / "small.gguf", metadata=llama_metadata())
    big = gguf_model(settings, big_file, key="big-llm")
    small = gguf_model(settings, small_file, key="small-llm")
    from models_app.services.runtime import runtime_estimate

    need_big = runtime_estimate(model=big, n_ctx=4096, path=str(big_file))
    need_small = runtime_estimate(model=small, n_ctx=4096, path=str(small_file))
    assert need_small < need_big
    runtime_host(budget=(need_small + need_big) // 2)
    response = superuser_client.post(
        f"{API}/runtime/load", {"model": big.key}, content_type="application/json"
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "ERR_INSUFFICIENT_RAM"
    assert body["details"]["required"] == need_big
    assert body["details"]["available"] == (need_small + need_big) // 2
    assert body["details"]["fits"] == "small-llm"
    assert "Try a smaller model: small-llm" in body["message"]
    forced = superuser_client.post(
        f"{API}/runtime/load", {"model": big.key, "force": True}, content_type="application/json"
    )
    assert forced.status_code == 202


@pytest.mark.parametrize(
    "body, code",
    [
        ({"model": "nope"}, 404),
        ({"model": "x", "colour": "red"}, 422),
        ({"model": "x", "keep_alive": -2}, 422),
        ({"model": "x", "n_ctx": 100}, 422),
        ({"model": "x", "force": "yes"}, 422),
    ],
)
def test_bad_load_requests(superuser_client, body, code):
    response = superuser_client.post(f"{API}/runtime/load", body, content_type="application/json")
    assert response.status_code == code


def test_n_ctx_beyond_the_trained_context_is_refused(superuser_client, settings, tiny_gguf):
    runtime_host()
    model = gguf_model(settings, tiny_gguf, context_window=2048)
    response = superuser_client.post(
        f"{API}/runtime/load", {"model": model.key, "n_ctx": 4096}, content_type="application/json"
    )
    assert response.status_code == 409 and "trained for (2048)" in response.json()["message"]
    assert response.json()["code"] == "ERR_INCOMPATIBLE"


def test_unload_of_a_model_not_loaded_is_409(superuser_client, settings, tiny_gguf):
    model = gguf_model(settings, tiny_gguf)
    response = superuser_client.post(
        f"{API}/runtime/unload", {"model": model.key}, content_type="application/json"
    )
    assert response.status_code == 409 and response.json()["code"] == "ERR_INVALID_STATE"


def test_unload_queues_for_the_instances_host(superuser_client, settings, tiny_gguf):
    model = gguf_model(settings, tiny_gguf)
    RuntimeInstance.objects.create(
        model=model, host="host-z", state="ready", n_ctx=4096, keep_alive=300, secret="s", port=1
    )
    response = superuser_client.post(
        f"{API}/runtime/unload", {"model": model.key}, content_type="application/json"
    )
    assert response.status_code == 202
    op = Operation.objects.get(pk=response.json()["operation"]["id"])
    assert (op.kind, op.worker_host) == ("unload", "host-z")


def test_runtime_endpoints_need_a_superuser(user_client, anonymous_client):
    assert anonymous_client.get(f"{API}/runtime").status_code == 401
    assert user_client.get(f"{API}/runtime").status_code == 403


def test_a_load_queued_for_a_host_without_runtime_fails_instead_of_holding_the_model(
    settings, tiny_gguf
):
    model = gguf_model(settings, tiny_gguf)
    op = Operation.objects.create(model=model, kind="load", worker_host="gone-host", plan={})
    Operation.objects.filter(pk=op.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    runtime_host("other-host")
    assert runtime_orphans_fail() == [op.pk]
    op.refresh_from_db()
    assert (op.state, op.error_code) == ("failed", "ERR_UNAVAILABLE")
    assert "gone-host" in op.error_message
    assert Event.objects.filter(operation=op, kind="failed").exists()


def test_a_fresh_load_of_a_live_host_is_left_alone(settings, tiny_gguf):
    model = gguf_model(settings, tiny_gguf)
    runtime_host("host-a")
    Operation.objects.create(model=model, kind="load", worker_host="host-a", plan={})
    assert runtime_orphans_fail() == []


def test_loads_are_never_requeued_to_the_task_broker(settings, tiny_gguf):
    model = gguf_model(settings, tiny_gguf)
    op = Operation.objects.create(model=model, kind="load", worker_host="host-a", plan={})
    Operation.objects.filter(pk=op.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert op.pk not in operations_requeue()


def test_a_failed_load_is_not_retried(settings, tiny_gguf):
    from models_app.errors import InvalidState

    model = gguf_model(settings, tiny_gguf)
    op = Operation.objects.create(model=model, kind="load", worker_host="h", state="failed")
    with pytest.raises(InvalidState, match="load the model again"):
        operation_retry(operation=op)


def test_the_delete_preflight_warns_that_a_loaded_model_is_unloaded_first(settings, tiny_gguf):
    model = gguf_model(settings, tiny_gguf)
    assert model_usage(model=model)["loaded_in_runtime"] is False
    RuntimeInstance.objects.create(
        model=model, host="host-a", state="ready", n_ctx=4096, keep_alive=300, secret="s", port=1
    )
    usage = model_usage(model=model)
    assert usage["loaded_in_runtime"] is True and usage["requires_confirmation"]
    assert any("loaded in the runtime on host-a" in w for w in usage["warnings"])


def test_status_names_the_loaded_models(superuser_client, settings, tiny_gguf):
    model = gguf_model(settings, tiny_gguf)
    RuntimeInstance.objects.create(
        model=model, host="host-a", state="ready", n_ctx=4096, keep_alive=300, secret="s", port=1
    )
    loaded = superuser_client.get(f"{API}/status").json()["loaded"]
    assert loaded == [{"model": model.key, "host": "host-a", "state": "ready"}]
