"""What a GGUF needs in memory once loaded in a runner, and what this host has.

    total = weights + kv_cache + compute + overhead

- weights: the tensors' exact bytes (the GGUF header's tensor_bytes), which llama.cpp maps
  from the file and reads whole;
- kv_cache: K and V for every layer and context position, f16 (llama.cpp's default):
  n_ctx x Σ_layers kv_heads x (key_length + value_length) x 2 bytes, that is
  2 x layers x n_ctx x kv_heads x head_dim x 2 when keys and values have one length.
  llama.cpp clears the buffer when it makes it, so it is resident from the load on. Gemma
  3's sliding-window layers get a full-size cache too (llama.cpp logs "using full-size
  SWA cache"). Encoders (bert, nomic-bert, ...) have none;
- compute: llama.cpp's compute buffers, two terms:
  LOGITS_SHARE x vocab_size x n_batch x 4: llama.cpp reserves a compute buffer sized by
  the worst graph, where the f32 logits of a full batch (vocab x n_batch) dominate (514.5
  MiB for Gemma's 262,144 tokens); a running model touches a share of it, and with it
  the tokenizer's tables and the output and repacked-weight buffers, which also grow
  with the vocabulary: 68.6 to 68.7 MiB on Gemma, about 1/8 of the logits figure;
  2 x n_ctx x n_batch x head_count x 4: the attention scores of a batch against the
  whole context and their softmax, f32 (llama-cpp-python leaves flash attention off).
  They are resident once a context fills: 34, 71 and 129 MiB more at n_ctx 2048, 4096,
  8192 with a prompt of 90% of the context, against 32, 64 and 128 MiB by this term;
- overhead: the runner process before any model (Python, llama-cpp-python, its server).

Calibrated on the Gemma 3 270M Q4_K_M file (tests/gemma.py; 253,113,024 bytes, 246,587,904
of tensors, vocabulary 262,144), llama-cpp-python 0.3.36, 2 threads, n_batch 512, with

    .venv/bin/python bench/runtime_memory.py

which measures RSS with psutil in fresh processes (MiB; the last of repeated runs, which
agreed within 0.3 MiB):

    bare `import llama_cpp.server.app, uvicorn`: 71.8
    n_ctx                                         2048    4096    8192
    in process Llama() + one short completion,
      RSS growth                                 338.2   374.2   446.4
    runner (models_app.runtime.runner), one
      short completion                           444.0   480.0   552.3
      after a 480-token prompt                  2311.9  2347.9  2420.0
    runner without logits_all, short             411.3   447.4   519.8
      after a 480-token prompt                   436.4   475.1   557.1
      with the context 90% full                  445.6   518.3   648.7
    this estimate                                439.2   507.2   643.2
      against the runner, short                  -1.1%   +5.7%  +16.5%
      against it without logits_all, full        -1.5%   -2.1%   -0.8%

The estimate is the runner with its context full; a short exchange measures less (up to
24% less at 8192, without logits_all). The runner's 2.3 GB after a 480-token prompt is
llama_cpp.server's `logits_all=True` default: llama-cpp-python then keeps n_ctx x vocab
f32 scores (1 MiB a token for Gemma) and llama.cpp computes the logits of every prompt
token. No estimate covers that; runners should be started with logits_all off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psutil

from ..errors import FormatError

F16_BYTES = 2  # llama.cpp's default KV cache type (type_k, type_v) is f16
FITS_SHARE = 0.8  # at most this share of the capacity: "fits"; above it up to all: "tight"

# Architectures llama.cpp runs without a KV cache (encoders, diffusion models): its
# llama_model::create_memory makes none for them.
NO_KV_CACHE = frozenset(
    {
        "bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "modern-bert",
        "gemma-embedding",
        "wavtokenizer-dec",
        "dream",
        "llada",
        "llada-moe",
        "rnd1",
    }
)

# Calibrated on the Gemma 3 270M file (see the module docstring).
LOGITS_SHARE = 1 / 8
F32_BYTES = 4
RUNNER_OVERHEAD = 72 * 1024**2  # measured 71.7 to 71.8 MiB


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model takes: its weights, KV cache, compute buffers, the runner itself."""

    weights: int
    kv_cache: int
    compute: int
    overhead: int
    total: int
    n_ctx: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class HostMemory:
    total: int
    available: int


def _per_layer_sum(value: Any, layers: int) -> int:
    """Return the sum over layers of a figure that is one number or one per layer."""
    if isinstance(value, list):
        return sum(int(v) for v in value[:layers])
    return int(value) * layers


def memory_estimate(
    *, facts: dict[str, Any], n_ctx: int, n_batch: int = 512, file_size: int | None = None
) -> MemoryEstimate:
    """Return the memory a runner needs to serve a GGUF with these facts at this n_ctx.

    weights: the tensors' bytes (else `file_size`, e.g. a registry entry's download
    size), which llama.cpp maps; of every shard for a split model (facts read from its
    first shard alone count `file_size`, the whole download, instead); kv_cache: 2 (K
    and V) x layers x n_ctx x KV heads x head dim x 2 bytes (f16), with the key and value
    lengths taken apart when they differ; compute: the calibrated margin for llama.cpp's
    compute buffers (the logits share and the attention scores); overhead: the runner
    process before any model (the module docstring has the measurements). A missing
    vocab_size counts as none. Raise
    FormatError naming the facts missing.
    """
    weights = facts.get("tensor_bytes") or file_size
    if (facts.get("split_count") or 1) > 1 and "shard_tensor_bytes" not in facts:
        # The first shard's header alone (a read before the download): its tensors are a
        # part of the weights; the whole download stands for them.
        weights = file_size
    needed = {
        "weights (tensor_bytes)": weights,
        "block_count": facts.get("block_count"),
        "head_count": facts.get("head_count"),
    }
    no_cache = facts.get("architecture") in NO_KV_CACHE
    if not no_cache:
        needed |= {
            "head_count_kv": facts.get("head_count_kv"),
            "key_length": facts.get("key_length"),
            "value_length": facts.get("value_length"),
        }
    missing = [name for name, value in needed.items() if value in (None, "", [])]
    if missing:
        raise FormatError(
            f"The memory cannot be estimated: the GGUF facts lack {', '.join(missing)}.",
            details={"missing": missing},
        )
    layers = int(facts["block_count"])
    kv_cache = 0
    if not no_cache:
        kv_heads = _per_layer_sum(facts["head_count_kv"], layers)
        per_token = kv_heads * (int(facts["key_length"]) + int(facts["value_length"]))
        kv_cache = n_ctx * per_token * F16_BYTES
    vocab = int(facts.get("vocab_size") or 0)
    heads = facts.get("head_count") or 0
    heads = max(heads) if isinstance(heads, list) else int(heads)
    logits = LOGITS_SHARE * vocab * n_batch * F32_BYTES
    attention = 2 * n_ctx * n_batch * heads * F32_BYTES
    compute = int(logits + attention)
    total = int(weights) + kv_cache + compute + RUNNER_OVERHEAD
    return MemoryEstimate(
        weights=int(weights),
        kv_cache=kv_cache,
        compute=compute,
        overhead=RUNNER_OVERHEAD,
        total=total,
        n_ctx=n_ctx,
    )


def context_within(*, facts: dict[str, Any], n_ctx: int) -> int:
    """Return n_ctx, or the model's trained context when that is shorter.

    llama.cpp would allocate a longer context if asked, but a model cannot use more
    positions than it was trained for (an encoder's position embeddings end there): a fit
    at the default n_ctx is the fit at the n_ctx the model would be loaded with.
    """
    trained = facts.get("context_length")
    if isinstance(trained, int) and 0 < trained < n_ctx:
        return trained
    return n_ctx


def host_memory() -> HostMemory:
    """Return this host's RAM: total, and available now (what can be had without swapping)."""
    vm = psutil.virtual_memory()
    return HostMemory(total=vm.total, available=vm.available)


def memory_fit(*, required: int, capacity: int) -> str:
    """Return "fits" (at most 80% of the capacity), "tight" (at most all) or "does_not_fit"."""
    if capacity > 0 and required <= FITS_SHARE * capacity:
        return "fits"
    if capacity > 0 and required <= capacity:
        return "tight"
    return "does_not_fit"
