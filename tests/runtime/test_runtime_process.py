"""The runtime with real processes: a supervisor, runners of the real Gemma 3 270M GGUF, daphne.

Slow (each load is a real llama.cpp load): marked `runtime`.
"""

import json
import urllib.request

import pytest

from models_app.models import Event, Installation, Operation, RuntimeInstance
from models_app.services.runtime import runtime_load_start, runtime_unload_start
from tests.processes import wait_until
from tests.runtime_helpers import wait_gone, wait_ready

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.runtime]


@pytest.fixture
def runtime(processes):
    return processes.runtime()


def test_load_serve_and_unload(gemma, runtime):
    result = runtime_load_start(model=gemma)
    assert result.status == "loading" and result.http_status == 202
    instance = wait_ready(gemma)
    assert instance.host == "test-host" and instance.port and instance.pid
    assert instance.n_threads >= 1 and instance.rss > 100 * 1024**2
    op = wait_until(
        lambda: Operation.objects.filter(pk=result.operation.pk, state="succeeded").first(),
        timeout=10,
        what="the load operation's end",
    )
    assert op.result["instance"] == instance.pk and op.result["rss"] > 0
    assert Event.objects.filter(kind="loaded", model=gemma).exists()
    request = urllib.request.Request(
        f"http://127.0.0.1:{instance.port}/v1/completions",
        data=json.dumps({"prompt": "The capital of France is", "max_tokens": 8}).encode(),
        headers={"Authorization": f"Bearer {instance.secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    assert body["usage"]["completion_tokens"] > 0
    again = runtime_load_start(model=gemma)
    assert again.status == "loaded" and again.http_status == 200
    unload = runtime_unload_start(model=gemma)
    assert unload.created
    wait_gone(gemma)
    assert Event.objects.filter(kind="unloaded", model=gemma).exists()


def test_a_delete_of_a_loaded_model_unloads_it_first(gemma, runtime, settings):
    from models_app.errors import ConfirmRequired
    from models_app.services import delete_start
    from tests.processes import operation_thread

    runtime_load_start(model=gemma)
    instance = wait_ready(gemma)
    with pytest.raises(ConfirmRequired) as refused:
        delete_start(model=gemma)
    assert refused.value.details["usage"]["loaded_in_runtime"] is True
    start = delete_start(model=gemma, confirm=True)
    thread, outcome = operation_thread(start.operation.pk)  # a worker's run of the delete
    thread.join(timeout=60)
    op = Operation.objects.get(pk=start.operation.pk)
    assert outcome["state"] == "succeeded", (outcome, op.error_message)
    assert op.result["unloaded"] is True
    assert not RuntimeInstance.objects.filter(model=gemma).exists()
    assert not Installation.objects.filter(model=gemma).exists()
    assert not _alive(instance.pid)  # the runner is gone, and its memory with it
    unloaded = Event.objects.get(kind="unloaded", model=gemma)
    assert f"delete #{op.pk}" in unloaded.message


def test_a_load_beyond_the_memory_budget_is_refused(gemma, processes):
    from models_app.errors import InsufficientRam

    processes.runtime(RUNTIME_MEMORY_BUDGET=50 * 1024**2)
    with pytest.raises(InsufficientRam) as refused:
        runtime_load_start(model=gemma)
    details = refused.value.details
    assert details["available"] == 50 * 1024**2 and details["required"] > details["available"]
    assert details["host"] == "test-host" and details["fits"] is None
    assert not Operation.objects.filter(kind="load").exists()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
