"""A runner process on its own (models_app/runtime/processes.py), with the real Gemma 3 270M GGUF.

Slow (a real llama.cpp load): marked `runtime`.
"""

import json
import os
import urllib.request

import pytest

from models_app.runtime.processes import Runner, RunnerSpec
from tests.gemma import gemma_file  # noqa: F401  (a fixture)

pytestmark = pytest.mark.runtime

PROMPT = "The old lighthouse keeper climbed the stairs one last time. At the top, he looked out"


@pytest.fixture
def runner(gemma_file):  # noqa: F811
    runner = Runner()
    spec = RunnerSpec(
        model_path=str(gemma_file), alias="gemma", n_ctx=4096, n_threads=1, api_key="key"
    )
    ready = runner.load(spec, timeout=120)
    yield runner, ready.port
    runner.stop()


def complete(port: int, max_tokens: int) -> dict:
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "repeat_penalty": 1.1}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer key", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def test_generating_keeps_no_logits_per_token(runner):
    # With llama-cpp-python's server default (logits_all) the runner kept every position's
    # logits: 1 MiB a token for Gemma's vocabulary, 128 tokens made it 130 MB larger.
    runner, port = runner
    complete(port, 1)
    before = runner.rss()
    answer = complete(port, 128)
    assert answer["usage"]["completion_tokens"] == 128
    assert runner.rss() - before < 32 * 1024**2


def test_the_runner_says_what_malloc_runs_with(runner):
    # glibc's defaults, or what an operator set (processes.py: huge pages made loads slower).
    # The runner reads it from its own environment.
    runner, _ = runner
    assert runner.facts["malloc"] == os.environ.get("GLIBC_TUNABLES", "")
    assert runner.facts["pid"] == runner.pid


def stream(port: int, max_tokens: int) -> list[dict]:
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer key", "Content-Type": "application/json"},
    )
    chunks = []
    with urllib.request.urlopen(request, timeout=300) as response:
        assert "access-control-allow-origin" not in {k.lower() for k in response.headers}
        for line in response:
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


def test_the_runner_streams_without_cors_or_context_middleware(runner):
    # Only its supervisor's web processes reach it: the two middlewares llama-cpp-python
    # adds (CORS, a request-id context nobody reads) would wrap every chunk's send.
    _, port = runner
    chunks = stream(port, 8)
    assert len([c for c in chunks if c["choices"][0]["text"]]) == 8  # and the finish chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert (
        "".join(c["choices"][0]["text"] for c in chunks) == complete(port, 8)["choices"][0]["text"]
    )


def test_a_runner_stopped_by_another_thread_drains_nothing():
    """The supervisor's loop drains the runners its select found readable; an eviction in a
    load's thread may stop one (closing its pipe) in between. That crashed the supervisor
    (ValueError: I/O operation on closed file) in a PostgreSQL CI run of the eviction test."""
    runner = Runner()
    assert runner.wait_spare(timeout=60)
    runner.stop()
    runner.drain()  # after the stop: no error, and nothing read
    assert runner.exit_code() is not None


def test_a_spare_faults_its_heap_in_ahead_and_a_plain_runner_does_not():
    warmed, plain = Runner(warm_heap=64 * 1024**2), Runner()
    try:
        assert warmed.wait_spare(timeout=60) and plain.wait_spare(timeout=60)
        assert warmed.facts["heap_warmed"] == 64 * 1024**2
        assert plain.facts["heap_warmed"] == 0
        # The pages stay with the process (the trim threshold is above them), for its load.
        assert warmed.rss() - plain.rss() > 60 * 1024**2
    finally:
        warmed.stop()
        plain.stop()


HEAP_REUSE = """
import ctypes, sys
from models_app.runtime.runner import heap_warm
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
warmed = heap_warm(int(sys.argv[1]))
after = rss()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
blocks = [libc.malloc(1024**2) for _ in range(48)]  # what a load allocates under 32 MiB
for block in blocks:
    ctypes.memset(block, 1, 1024**2)
print(warmed, after - before, rss() - after)
"""


@pytest.mark.parametrize("size", [0, 64 * 1024**2])
def test_the_warmed_heap_is_what_the_next_allocations_reuse(size):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", HEAP_REUSE, str(size)], capture_output=True, text=True, check=True
    ).stdout.split()
    warmed, grew_warming, grew_after = (int(x) for x in out)
    assert warmed == size
    if size:
        assert grew_warming > 60 * 1024**2  # faulted in and kept
        assert grew_after < 4 * 1024**2  # 48 MiB more took no new pages
    else:
        assert grew_warming < 4 * 1024**2
        assert grew_after > 44 * 1024**2  # without it, every block is a fresh page


def busiest_thread(pid: int, during) -> str:
    """Run `during()`; return the id of the runner's thread that used the most CPU in it."""

    def ticks() -> dict[str, int]:
        out = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:  # a thread that ended
                continue
            out[tid] = int(fields[11]) + int(fields[12])  # utime + stime
        return out

    before = ticks()
    during()
    after = ticks()
    return max(after, key=lambda tid: after[tid] - before.get(tid, 0))


def test_every_request_runs_the_model_on_the_same_thread(runner):
    # Each thread that calls llama.cpp starts an OpenMP team of its own; from starlette's
    # pool the model ran on a new thread every few requests, and with more OpenMP threads
    # than cores libgomp sleeps in its barriers (44 -> 27 tokens/s here; runner.py).
    runner, port = runner
    threads = {
        busiest_thread(runner.pid, lambda: stream(port, 48)),
        busiest_thread(runner.pid, lambda: complete(port, 48)),
        busiest_thread(runner.pid, lambda: stream(port, 48)),
        busiest_thread(runner.pid, lambda: complete(port, 48)),
    }
    assert len(threads) == 1
    assert int(threads.pop()) != runner.pid  # its own thread, not the event loop's
