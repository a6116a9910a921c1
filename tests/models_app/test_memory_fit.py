"""The memory estimate (by hand on tiny GGUF files, against a real runner) and the fit."""

import json
import secrets
import selectors
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from models_app.errors import FormatError
from models_app.gguf import gguf_facts, gguf_header_of
from models_app.runtime.memory import (
    LOGITS_SHARE,
    RUNNER_OVERHEAD,
    MemoryEstimate,
    host_memory,
    memory_estimate,
    memory_fit,
)
from tests.gemma import gemma_file  # noqa: F401  (a fixture)
from tests.gguf_files import llama_metadata, write_gguf

ROOT = Path(__file__).resolve().parents[2]


def _tiny_facts(tmp_path, arch="llama", metadata=None, tensors=None):
    path = write_gguf(
        tmp_path / f"{arch}.gguf",
        arch=arch,
        metadata=llama_metadata() if metadata is None else metadata,
        tensors=tensors,
    )
    return gguf_facts(gguf_header_of(path))


def test_the_estimate_is_the_formula_by_hand(tmp_path):
    facts = _tiny_facts(tmp_path)
    estimate = memory_estimate(facts=facts, n_ctx=512)
    # Tensor bytes: Q8_0 64x100, F16 64x64 and 64x16, Q4_K 256x64, Q6_K 256x64, F32 64.
    weights = 100 * 2 * 34 + 64 * 64 * 2 + 64 * 16 * 2 + 64 * 144 + 64 * 210 + 64 * 4
    # K and V x 2 layers x 512 positions x 2 KV heads x head dim 64/8 x 2 bytes (f16).
    kv_cache = 2 * 2 * 512 * 2 * 8 * 2
    # 1/8 of the logits of a 512-token batch over 100 tokens, f32; then the attention
    # scores and their softmax: 512 positions x 512 batch x 8 heads, f32.
    compute = int(100 * 512 * 4 / 8) + 2 * 512 * 512 * 8 * 4
    assert estimate == MemoryEstimate(
        weights=weights,
        kv_cache=kv_cache,
        compute=compute,
        overhead=RUNNER_OVERHEAD,
        total=weights + kv_cache + compute + RUNNER_OVERHEAD,
        n_ctx=512,
    )
    assert estimate.as_dict() == {
        "weights": weights,
        "kv_cache": kv_cache,
        "compute": compute,
        "overhead": RUNNER_OVERHEAD,
        "total": estimate.total,
        "n_ctx": 512,
    }
    assert LOGITS_SHARE == 1 / 8


def test_kv_cache_and_attention_grow_with_n_ctx_and_logits_with_n_batch(tmp_path):
    facts = _tiny_facts(tmp_path)
    small, large = (memory_estimate(facts=facts, n_ctx=n) for n in (1024, 4096))
    assert large.kv_cache == 4 * small.kv_cache
    assert large.weights == small.weights and large.overhead == small.overhead
    wide = memory_estimate(facts=facts, n_ctx=1024, n_batch=2048)
    assert wide.compute == int(100 * 2048 * 4 / 8) + 2 * 1024 * 2048 * 8 * 4


def test_keys_and_values_of_different_lengths_count_apart(tmp_path):
    meta = {
        "deepseek2.block_count": 3,
        "deepseek2.embedding_length": 64,
        "deepseek2.attention.head_count": 4,
        "deepseek2.attention.head_count_kv": 4,
        "deepseek2.attention.key_length": 24,
        "deepseek2.attention.value_length": 16,
    }
    facts = _tiny_facts(tmp_path, arch="deepseek2", metadata=meta)
    assert memory_estimate(facts=facts, n_ctx=100).kv_cache == 100 * 3 * 4 * (24 + 16) * 2


def test_per_layer_kv_heads_are_summed(tmp_path):
    meta = {
        "openelm.block_count": 3,
        "openelm.embedding_length": 64,
        "openelm.attention.head_count": [4, 8, 8],
        "openelm.attention.head_count_kv": [1, 2, 2],
    }
    estimate = memory_estimate(facts=_tiny_facts(tmp_path, "openelm", meta), n_ctx=256)
    # Head dim 64 / 4 (the first layer's heads, as llama.cpp derives it).
    assert estimate.kv_cache == 256 * (1 + 2 + 2) * (16 + 16) * 2
    assert estimate.compute == 2 * 256 * 512 * 8 * 4  # no vocabulary; the most heads


def test_an_encoder_has_no_kv_cache(tmp_path):
    meta = {
        "bert.block_count": 2,
        "bert.embedding_length": 32,
        "bert.attention.head_count": 2,
        "bert.pooling_type": 2,
    }
    estimate = memory_estimate(facts=_tiny_facts(tmp_path, "bert", meta), n_ctx=512)
    assert estimate.kv_cache == 0
    assert estimate.compute == 2 * 512 * 512 * 2 * 4


def test_registry_facts_take_the_file_size_for_the_weights():
    facts = {
        "architecture": "qwen2",
        "block_count": 28,
        "embedding_length": 1536,
        "head_count": 12,
        "head_count_kv": 2,
        "key_length": 128,
        "value_length": 128,
        "vocab_size": 151936,
    }
    estimate = memory_estimate(facts=facts, n_ctx=4096, file_size=986_000_000)
    assert estimate.weights == 986_000_000
    assert estimate.kv_cache == 2 * 28 * 4096 * 2 * 128 * 2  # 112 MiB
    assert estimate.compute == int(151936 * 512 * 4 / 8) + 2 * 4096 * 512 * 12 * 4


def test_missing_facts_are_named():
    with pytest.raises(FormatError, match="lack weights \\(tensor_bytes\\), head_count_kv") as info:
        memory_estimate(
            facts={"block_count": 2, "head_count": 4, "key_length": 8, "value_length": 8},
            n_ctx=512,
        )
    assert info.value.details == {"missing": ["weights (tensor_bytes)", "head_count_kv"]}


@pytest.mark.parametrize(
    ("required", "status"),
    [(0, "fits"), (800, "fits"), (801, "tight"), (1000, "tight"), (1001, "does_not_fit")],
)
def test_fit_thresholds(required, status):
    assert memory_fit(required=required, capacity=1000) == status


def test_nothing_fits_no_capacity():
    assert memory_fit(required=0, capacity=0) == "does_not_fit"


def test_host_memory_comes_from_psutil():
    memory = host_memory()
    assert memory.total == psutil.virtual_memory().total
    assert 0 < memory.available <= memory.total


# --- against a real runner ----------------------------------------------------------------


def _line(proc: subprocess.Popen, deadline: float) -> dict:
    """Return the runner's next JSON line, waiting until the deadline at most."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            raise AssertionError("the runner said nothing in time")
    line = proc.stdout.readline()
    assert line, f"the runner exited ({proc.wait(timeout=5)})"
    return json.loads(line)


def test_the_estimate_is_within_a_quarter_of_a_real_runner(gemma_file):  # noqa: F811
    """Load Gemma in the runner program at the default n_ctx, serve one completion, and
    compare its RSS with the estimate (the module docstring has the calibration)."""
    n_ctx = 4096
    estimate = memory_estimate(facts=gguf_facts(gguf_header_of(gemma_file)), n_ctx=n_ctx)
    key = secrets.token_hex(16)
    proc = subprocess.Popen(
        [sys.executable, "-m", "models_app.runtime.runner"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        assert _line(proc, deadline)["event"] == "spare"
        spec = {"model_path": str(gemma_file), "n_ctx": n_ctx, "n_threads": 2, "api_key": key}
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        ready = _line(proc, deadline)
        assert ready["event"] == "ready", ready
        request = urllib.request.Request(
            f"http://127.0.0.1:{ready['port']}/v1/completions",
            data=json.dumps({"prompt": "The capital of France is", "max_tokens": 16}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            assert json.loads(response.read())["choices"]
        rss = psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert abs(estimate.total - rss) <= 0.25 * rss, (estimate.as_dict(), rss)
