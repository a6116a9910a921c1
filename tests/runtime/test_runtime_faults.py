"""Faults of the runtime with real processes (issue 11, item 11).

A runner killed with SIGKILL, a GGUF that llama.cpp refuses, the runtime supervisor killed
with SIGKILL (alone, and as the child of `manage.py run`): each is noticed, the database
ends up agreeing with the processes, no runner is left behind, and the model loads again.
"""

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models_app.models import Event, Operation, ProcessHeartbeat, RuntimeInstance
from models_app.runtime.processes import RUNNER_MODULE
from models_app.services.events import OPERATIONS_GROUP
from models_app.services.runtime import runtime_load_start
from models_app.services.runtime.supervisor import runtime_supervisor_ended
from tests.factories import ModelFactory
from tests.processes import wait_until
from tests.runtime_helpers import (
    V1Stream,
    children_running,
    install_gguf,
    process_gone,
    v1_post,
    wait_ended,
    wait_gone,
    wait_ready,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.runtime]

LOAD_HEADER = "X-Modelyard-Load-Seconds"
# The Redis database of these tests (the live layer's groups are Redis pub/sub channels,
# which every database shares: what a test looks for names its own host).
REDIS_URL = "redis://127.0.0.1:6379/8"


def completion(model) -> dict:
    return {"model": model.key, "prompt": "The capital of France is", "max_tokens": 4}


class RuntimeUpdates:
    """A listener of the live group on Redis: every `runtime.update` a process publishes."""

    def __init__(self, url: str):
        from channels_redis.pubsub import RedisPubSubChannelLayer

        self.layer = RedisPubSubChannelLayer(hosts=[url])
        self.updates: list[tuple[float, dict]] = []
        self._joined = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self._thread.start()
        assert self._joined.wait(10), "could not join the live group on Redis"

    async def _listen(self) -> None:
        channel = await self.layer.new_channel()
        await self.layer.group_add(OPERATIONS_GROUP, channel)
        self._joined.set()
        try:
            while not self._stop.is_set():
                try:
                    message = await asyncio.wait_for(self.layer.receive(channel), 0.2)
                except TimeoutError:
                    continue
                if message.get("type") == "runtime.update":
                    self.updates.append((time.monotonic(), message["runtime"]))
        finally:
            await self.layer.group_discard(OPERATIONS_GROUP, channel)
            await self.layer.flush()

    def instance_states(self, instance_id: int, *, after: float) -> list[str]:
        return [
            i["state"]
            for at, runtime in self.updates
            if at > after
            for i in runtime["instances"]
            if i["id"] == instance_id
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def runtime_updates():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (the live layer of this test)")
    listener = RuntimeUpdates(REDIS_URL)
    yield listener
    listener.close()


@pytest.fixture
def broken_gguf(tmp_path):
    """A GGUF with a valid header and bogus content: one tensor, no vocabulary, no layers."""
    import gguf

    path = tmp_path / "broken.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_killed_runner_is_noticed_and_the_next_request_loads_it_again(
    gemma, processes, superuser_token, runtime_updates
):
    host = f"host-{processes.tag[:8]}"
    processes.runtime(host=host, REDIS_URL=REDIS_URL)
    web = processes.web(host=host, REDIS_URL=REDIS_URL)
    status, _, answer = v1_post(web.port, superuser_token, "completions", completion(gemma))
    assert status == 200, answer
    instance = RuntimeInstance.objects.get(model=gemma, state="ready")

    killed_at = time.monotonic()
    os.kill(instance.pid, signal.SIGKILL)
    # Noticed within 2 s: the instance failed, an event says so, the change is published.
    failed = wait_until(
        lambda: RuntimeInstance.objects.filter(pk=instance.pk, state="failed").first(),
        timeout=2, what="the instance of the killed runner to fail",
    )  # fmt: skip
    assert failed.error_code == "ERR_INTERNAL"
    assert "killed by SIGKILL" in failed.error_message, failed.error_message
    assert failed.port is None and failed.in_flight == 0
    event = Event.objects.get(model=gemma, kind="failed")
    assert "killed by SIGKILL" in event.message and event.data["host"] == host
    wait_until(
        lambda: "failed" in runtime_updates.instance_states(instance.pk, after=killed_at),
        timeout=2, what="a runtime.update with the failed instance",
    )  # fmt: skip

    # The next request loads the model again (JIT) and is answered.
    status, headers, answer = v1_post(web.port, superuser_token, "completions", completion(gemma))
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] > 0
    assert float(headers[LOAD_HEADER]) > 0
    again = RuntimeInstance.objects.get(model=gemma)  # the failed row made way
    assert again.state == "ready" and again.pid != instance.pid and again.requests_served == 1
    assert process_gone(instance.pid)


def test_a_gguf_that_llama_cpp_refuses_fails_the_load_with_its_message(
    settings, broken_gguf, processes, superuser_token
):
    model = ModelFactory(
        key="broken-gguf", repo_id="test/broken-GGUF", type="llm", gguf_file="broken.gguf",
        allow_patterns=[], context_window=128, source="custom",
    )  # fmt: skip
    install_gguf(model, broken_gguf, settings.MODELS_HUB_DIR)
    runtime = processes.runtime()
    start = runtime_load_start(model=model)
    assert start.http_status == 202

    op = wait_ended(start.operation.pk)
    assert op.state == "failed" and op.error_code == "ERR_FORMAT", op.error_message
    # llama.cpp's own words, not only llama-cpp-python's "Failed to load model from file".
    assert "key not found in model: tokenizer.ggml.model" in op.error_message, op.error_message
    assert str(settings.MODELS_DIR) not in op.error_message  # no server path to clients
    instance = RuntimeInstance.objects.get(model=model)
    assert instance.state == "failed" and instance.error_code == "ERR_FORMAT"
    assert "tokenizer.ggml.model" in instance.error_message
    assert str(settings.MODELS_DIR) not in instance.error_message
    # Its runner exited; only the spare runs (a fresh one).
    wait_until(
        lambda: process_gone(instance.pid), timeout=5, what="the runner of the refused file to exit"
    )
    assert [p.pid for p in children_running(runtime.pid, RUNNER_MODULE)] != [instance.pid]

    # A /v1 request for it (JIT) gets the same refusal, in OpenAI's error shape.
    web = processes.web()
    status, _, answer = v1_post(web.port, superuser_token, "completions", completion(model))
    assert status == 409, answer  # ERR_FORMAT: the file is not what the runtime runs
    assert answer["error"]["code"] == "ERR_FORMAT"
    assert "tokenizer.ggml.model" in answer["error"]["message"]


def test_a_supervisor_killed_and_started_again_leaves_no_runner_and_a_true_database(
    gemma, gemma_entry, processes
):
    first = processes.runtime(RUNTIME_MAX_LOADED=2)
    runtime_load_start(model=gemma)
    loaded = wait_ready(gemma)
    # A load that cannot finish while the supervisor dies: its runner (the spare, which the
    # load takes) is stopped first, as a load stuck on a slow disk would be.
    spare = wait_until(first.spare_runner, timeout=30, what="a spare runner")
    spare.suspend()
    other = gemma_entry("gemma-3-270m-second")
    loading = runtime_load_start(model=other).operation
    wait_until(
        lambda: RuntimeInstance.objects.filter(model=other, state="loading", pid=spare.pid).exists()
        and Operation.objects.filter(pk=loading.pk, state="running").exists(),
        timeout=10, what="the second load to run in the stopped runner",
    )  # fmt: skip

    first.kill()
    # The loaded model's runner exits by itself when its supervisor is gone.
    wait_until(lambda: process_gone(loaded.pid), timeout=5, what="the orphaned runner to exit")
    assert not process_gone(spare.pid)  # stopped: it cannot notice; the next supervisor kills it
    assert RuntimeInstance.objects.filter(host="test-host").count() == 2  # nobody told the rows

    second = processes.runtime(RUNTIME_MAX_LOADED=2)
    wait_until(lambda: process_gone(spare.pid), timeout=5, what="the stopped runner to be killed")
    assert not RuntimeInstance.objects.filter(host="test-host").exists()
    interrupted = Operation.objects.get(pk=loading.pk)
    assert interrupted.state == "interrupted", interrupted.state
    assert "the runtime supervisor restarted" in interrupted.error_message
    assert Event.objects.filter(kind="unloaded", model=gemma).exists()
    # Only the new supervisor's heartbeat is left for the host.
    beats = ProcessHeartbeat.objects.filter(role="runtime", host="test-host")
    assert list(beats.values_list("pid", flat=True)) == [second.pid]

    # And the models load again.
    runtime_load_start(model=gemma)
    assert wait_ready(gemma).pid in {p.pid for p in children_running(second.pid, RUNNER_MODULE)}
    runtime_load_start(model=other)
    wait_ready(other)


def test_a_runner_that_ends_while_its_supervisor_lives_is_not_a_supervisor_death(
    settings, gemma, gemma_entry, processes
):
    """`manage.py run` calls its hook for every process of the runtime child's tree that ends:
    a runner's death (or an unload) must leave the host's other instances alone."""
    settings.HOST_NAME = "test-host"  # the hook runs in run's process, on the supervisor's host
    runtime = processes.runtime(RUNTIME_MAX_LOADED=2)
    other = gemma_entry("gemma-3-270m-second")
    runtime_load_start(model=gemma)
    runtime_load_start(model=other)
    first, second = wait_ready(gemma), wait_ready(other)
    os.kill(first.pid, signal.SIGKILL)
    wait_until(
        lambda: RuntimeInstance.objects.filter(pk=first.pk, state="failed").exists(),
        timeout=2, what="the killed runner's instance to fail",
    )  # fmt: skip

    # What `run` does when its tree refresh sees the runner gone.
    runtime_supervisor_ended([first.pid], "a process of runtime ended")
    assert RuntimeInstance.objects.get(pk=second.pk).state == "ready"
    assert not process_gone(second.pid)
    assert RuntimeInstance.objects.get(pk=first.pk).state == "failed"  # for the next load
    assert ProcessHeartbeat.objects.filter(role="runtime", pid=runtime.pid).exists()


def test_run_restarts_a_killed_runtime_child_and_the_model_loads_again(
    gemma, processes, superuser_token
):
    run = processes.run()
    status, _, answer = v1_post(run.port, superuser_token, "completions", completion(gemma))
    assert status == 200, answer
    instance = RuntimeInstance.objects.get(model=gemma, state="ready")
    (child,) = children_running(run.proc.pid, "manage.py runtime")
    assert instance.pid in {p.pid for p in children_running(child.pid, RUNNER_MODULE)}

    os.killpg(child.pid, signal.SIGKILL)
    # run's hook cleans the host's runtime at once, before the child is started again.
    wait_gone(gemma, timeout=5)
    wait_until(
        lambda: not ProcessHeartbeat.objects.filter(role="runtime", pid=child.pid).exists(),
        timeout=5, what="the dead child's heartbeat to be forgotten",
    )  # fmt: skip
    wait_until(
        lambda: process_gone(instance.pid), timeout=5, what="the runner of the dead child to exit"
    )
    wait_until(
        lambda: ProcessHeartbeat.objects.filter(role="runtime").exclude(pid=child.pid).exists(),
        timeout=30, what="the restarted runtime child's heartbeat", proc=run.proc,
    )  # fmt: skip
    assert "runtime exited with status -9; restarting in 1 s" in run.output()

    status, headers, answer = v1_post(run.port, superuser_token, "completions", completion(gemma))
    assert status == 200, answer
    assert float(headers[LOAD_HEADER]) > 0
    assert RuntimeInstance.objects.get(model=gemma).pid != instance.pid


def test_a_runner_killed_mid_stream_ends_the_stream(gemma, processes, superuser_token):
    processes.runtime()
    web = processes.web()
    body = {"model": gemma.key, "prompt": "Once upon a time", "max_tokens": 2048,
            "logit_bias": {"1": -100}}  # fmt: skip
    stream = V1Stream(web.port, superuser_token, "completions", body, timeout=20)
    try:
        assert stream.status == 200 and stream.event() is not None
        instance = RuntimeInstance.objects.get(model=gemma)
        os.kill(instance.pid, signal.SIGKILL)
        # The client is not left waiting: its stream ends (cut, or with an error event).
        # The client is not left waiting: its stream ends with an error event.
        events = []
        while (event := stream.event()) is not None:
            events.append(event)
    finally:
        stream.close()
    failed = wait_until(
        lambda: RuntimeInstance.objects.filter(pk=instance.pk, state="failed").first(),
        timeout=5, what="the instance to fail",
    )  # fmt: skip
    assert failed.in_flight == 0
    assert events[-1]["error"]["code"] == "ERR_UPSTREAM", events[-1]
    assert "stopped mid-stream" in events[-1]["error"]["message"]


def test_a_runner_killed_while_it_answers_is_a_502(gemma, processes, superuser_token):
    processes.runtime()
    web = processes.web()
    runtime_load_start(model=gemma)
    instance = wait_ready(gemma)
    body = {"model": gemma.key, "prompt": "Once upon a time", "max_tokens": 2048,
            "logit_bias": {"1": -100}}  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        asked = pool.submit(v1_post, web.port, superuser_token, "completions", body, timeout=30)
        wait_until(
            lambda: RuntimeInstance.objects.filter(pk=instance.pk, in_flight=1).exists(),
            timeout=10, what="the request in flight",
        )  # fmt: skip
        os.kill(instance.pid, signal.SIGKILL)
        status, _, answer = asked.result(timeout=30)
    assert status == 502, answer
    assert answer["error"]["code"] == "ERR_UPSTREAM", answer
    failed = wait_until(
        lambda: RuntimeInstance.objects.filter(pk=instance.pk, state="failed").first(),
        timeout=5, what="the instance to fail",
    )  # fmt: skip
    assert failed.in_flight == 0
