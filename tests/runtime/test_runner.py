"""A runner process on its own (models_app/runtime/processes.py), with the real Gemma 3 270M GGUF.

Slow (a real llama.cpp load): marked `runtime`.
"""

import json
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
