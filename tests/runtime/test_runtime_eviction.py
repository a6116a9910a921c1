"""Eviction and keep-alive with real runners (issue 11, item 3).

RUNTIME_MAX_LOADED=1 and two registry keys of the one Gemma file stand for two models that
cannot be loaded together: loading the second unloads the first while it is idle, and is
refused (ERR_INSUFFICIENT_RAM, the load operation failed) while the first serves a request.
Keep-alive: 0 unloads after the request, a second expires, -1 stays, a request renews it.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest

from models_app.models import Event, Operation, RuntimeInstance
from models_app.services.runtime import runtime_load_start
from tests.processes import wait_until
from tests.runtime_helpers import (
    V1Stream,
    process_gone,
    v1_post,
    wait_ended,
    wait_gone,
    wait_ready,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.runtime]

GEMMA_EOS = 1  # tokenizer.ggml.eos_token_id of the Gemma file


def completion(model, **extra) -> dict:
    return {"model": model.key, "prompt": "The capital of France is", "max_tokens": 4, **extra}


def long_completion(model) -> dict:
    """A completion that streams for as long as the test reads (the end of text is banned)."""
    return {
        "model": model.key,
        "prompt": "Once upon a time",
        "max_tokens": 2048,
        "logit_bias": {str(GEMMA_EOS): -100},
    }


@pytest.fixture
def two_models(gemma_entry):
    return gemma_entry("gemma-a"), gemma_entry("gemma-b")


def test_loading_b_unloads_idle_a_first(two_models, processes):
    a, b = two_models
    processes.runtime(RUNTIME_MAX_LOADED=1)
    runtime_load_start(model=a)
    first = wait_ready(a)

    load_b = runtime_load_start(model=b).operation
    op = wait_ended(load_b.pk)
    assert op.state == "succeeded", op.error_message
    assert op.result["evicted"] == [a.key]
    assert wait_ready(b).state == "ready"
    assert not RuntimeInstance.objects.filter(model=a).exists()
    assert process_gone(first.pid)
    # A's unload is an operation of its own, a child of B's load; its event says why.
    unload = Operation.objects.get(model=a, kind="unload")
    assert unload.parent_id == load_b.pk and unload.state == "succeeded"
    event = Event.objects.get(model=a, kind="unloaded")
    assert event.operation_id == unload.pk
    assert f"to make room for {b.key}" in event.message, event.message


def test_an_instance_serving_a_request_is_never_evicted(two_models, processes, superuser_token):
    a, b = two_models
    processes.runtime(RUNTIME_MAX_LOADED=1)
    web = processes.web()
    stream = V1Stream(web.port, superuser_token, "completions", long_completion(a))  # JIT
    try:
        assert stream.status == 200
        assert stream.event()["choices"][0]["text"] is not None  # tokens flow
        serving = RuntimeInstance.objects.get(model=a)
        assert serving.state == "ready" and serving.in_flight == 1

        # The load of B is refused, not queued: its operation fails and says why.
        op = wait_ended(runtime_load_start(model=b).operation.pk)
        assert op.state == "failed" and op.error_code == "ERR_INSUFFICIENT_RAM", op.error_message
        assert "serving a request" in op.error_message and a.key in op.error_message
        assert not RuntimeInstance.objects.filter(model=b).exists()
        # A request for B (JIT) gets that answer at once.
        status, _, answer = v1_post(web.port, superuser_token, "completions", completion(b))
        assert status == 409, answer
        assert answer["error"]["code"] == "ERR_INSUFFICIENT_RAM"
        assert Operation.objects.filter(model=b, kind="load").count() == 2  # one per ask

        # A went on streaming all along.
        for _ in range(3):
            assert stream.event() is not None
        still = RuntimeInstance.objects.get(model=a)
        assert (still.pk, still.pid, still.state, still.in_flight) == (
            serving.pk, serving.pid, "ready", 1,
        )  # fmt: skip
    finally:
        stream.close()  # the client hangs up mid-stream: its request ends there
    wait_until(
        lambda: RuntimeInstance.objects.filter(model=a, in_flight=0).exists(),
        timeout=10, what="the hung-up request to end",
    )  # fmt: skip

    # Idle now: B's load unloads it.
    op = wait_ended(runtime_load_start(model=b).operation.pk)
    assert op.state == "succeeded", op.error_message
    assert op.result["evicted"] == [a.key]
    assert process_gone(serving.pid)


def test_keep_alive_zero_unloads_after_the_request(gemma, processes, superuser_token):
    processes.runtime()
    web = processes.web()
    status, _, answer = v1_post(web.port, superuser_token, "completions",
                                completion(gemma, keep_alive=0))  # fmt: skip
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] > 0
    wait_gone(gemma, timeout=10)
    unload = wait_ended(Operation.objects.get(model=gemma, kind="unload").pk)
    assert unload.state == "succeeded"
    assert Event.objects.filter(model=gemma, kind="unloaded", operation=unload).exists()


def test_a_keep_alive_of_one_second_expires_and_minus_one_stays(two_models, processes):
    forever, brief = two_models
    processes.runtime(RUNTIME_MAX_LOADED=2)
    runtime_load_start(model=forever, keep_alive=-1)
    kept = wait_ready(forever)
    assert kept.keep_alive == -1 and kept.expires_at is None
    runtime_load_start(model=brief, keep_alive=1)
    expiring = wait_ready(brief)
    assert expiring.keep_alive == 1
    assert (expiring.expires_at - expiring.loaded_at).total_seconds() == 1

    wait_gone(brief, timeout=10)
    event = Event.objects.get(model=brief, kind="unloaded")
    assert "keep-alive of 1 s expired" in event.message, event.message
    assert process_gone(expiring.pid)
    # Loaded before the other, and still there after the other's second ran out.
    still = RuntimeInstance.objects.get(model=forever)
    assert (still.pk, still.state, still.expires_at) == (kept.pk, "ready", None)
    assert not process_gone(kept.pid)


def test_a_request_resets_the_expiry(gemma, processes, superuser_token):
    processes.runtime()
    web = processes.web()
    runtime_load_start(model=gemma, keep_alive=600)
    loaded = wait_ready(gemma)

    status, _, answer = v1_post(web.port, superuser_token, "completions", completion(gemma))
    assert status == 200, answer
    served = RuntimeInstance.objects.get(pk=loaded.pk)
    assert served.expires_at > loaded.expires_at
    assert (served.expires_at - served.last_request_at).total_seconds() == 600

    # A request's own keep-alive replaces the instance's from then on: one second here.
    status, _, answer = v1_post(web.port, superuser_token, "completions",
                                completion(gemma, keep_alive=1))  # fmt: skip
    assert status == 200, answer
    short = RuntimeInstance.objects.get(pk=loaded.pk)
    assert short.keep_alive == 1
    assert (short.expires_at - short.last_request_at).total_seconds() == 1
    wait_gone(gemma, timeout=10)
    assert "keep-alive of 1 s expired" in Event.objects.get(model=gemma, kind="unloaded").message


def test_keep_alive_zero_waits_for_the_other_requests_in_flight(gemma, processes, superuser_token):
    processes.runtime()
    web = processes.web()
    runtime_load_start(model=gemma)
    wait_ready(gemma)
    tokens = 8
    with ThreadPoolExecutor(2) as pool:
        # The first (keep_alive 0) holds the runner; the stream waits its turn behind it.
        first = pool.submit(
            v1_post,
            web.port,
            superuser_token,
            "completions",
            {**long_completion(gemma), "max_tokens": 32, "keep_alive": 0},
        )
        wait_until(
            lambda: RuntimeInstance.objects.filter(model=gemma, in_flight=1).exists(),
            timeout=10,
            what="the first request in flight",
        )
        stream = pool.submit(
            V1Stream,
            web.port,
            superuser_token,
            "completions",
            {**long_completion(gemma), "max_tokens": tokens},
        )
        wait_until(
            lambda: RuntimeInstance.objects.filter(model=gemma, in_flight=2).exists(),
            timeout=10, what="the stream in flight beside it",
        )  # fmt: skip
        status, _, answer = first.result(timeout=120)
        assert status == 200, answer
        stream = stream.result(timeout=120)
        try:
            assert stream.status == 200
            events = []
            while (event := stream.event()) is not None:
                events.append(event)
        finally:
            stream.close()
    # Not unloaded under the stream: it got every token, then the model went.
    assert events and events[-1]["choices"][0]["finish_reason"] == "length"
    wait_gone(gemma, timeout=10)
    (unload,) = Operation.objects.filter(model=gemma, kind="unload")
    assert wait_ended(unload.pk).state == "succeeded"
