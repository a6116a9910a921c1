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
