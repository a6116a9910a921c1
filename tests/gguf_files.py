"""Tiny GGUF files written with the `gguf` package's GGUFWriter (llama.cpp's own writer).

Real files, a few kilobytes each: the header parser and the memory estimate read them
as they read a downloaded model. Tensors are zeros; their bytes are what their ggml type
says (a quantized tensor is written as its raw blocks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType

# name -> (shape as ggml has it: first dimension first, ggml type)
LLAMA_TENSORS = {
    "token_embd.weight": ((64, 100), Q.Q8_0),
    "blk.0.attn_q.weight": ((64, 64), Q.F16),
    "blk.0.attn_k.weight": ((64, 16), Q.F16),
    "blk.0.ffn_up.weight": ((256, 64), Q.Q4_K),
    "blk.1.ffn_up.weight": ((256, 64), Q.Q6_K),
    "output_norm.weight": ((64,), Q.F32),
}


def _raw(shape: tuple[int, ...], qtype: Q) -> np.ndarray:
    """Return zeros holding a tensor of this ggml shape and type, as GGUFWriter takes it."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows = tuple(reversed(shape[1:]))  # numpy's order: last ggml dimension first
    if qtype == Q.F32:
        return np.zeros((*rows, shape[0]), dtype=np.float32)
    if qtype == Q.F16:
        return np.zeros((*rows, shape[0]), dtype=np.float16)
    return np.zeros((*rows, shape[0] // block * size), dtype=np.uint8)


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    metadata: dict[str, Any] | None = None,
    tensors: dict[str, tuple[tuple[int, ...], Q]] | None = None,
    version: int = 3,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    """Write a GGUF with these metadata (key -> value; lists become arrays) and tensors.

    `version` 2 rewrites the version field: v2 and v3 files are laid out alike (v3 only
    added big-endian files), so that is a real v2 file.
    """
    writer = gguf.GGUFWriter(path, arch, endianess=endianess)
    for key, value in (metadata or {}).items():
        if isinstance(value, tuple):  # (value, GGUFValueType): a type of its own
            writer.add_key_value(key, value[0], value[1])
        elif isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, value)
    for name, (shape, qtype) in (tensors if tensors is not None else LLAMA_TENSORS).items():
        raw = _raw(shape, qtype)
        writer.add_tensor(name, raw, raw_dtype=None if qtype in (Q.F32, Q.F16) else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if version != 3:
        data = bytearray(path.read_bytes())
        data[4:8] = version.to_bytes(4, "little")
        path.write_bytes(bytes(data))
    return path


def llama_metadata(**overrides: Any) -> dict[str, Any]:
    """Return the hyperparameters of a tiny llama-style model (GQA: 8 heads, 2 KV heads)."""
    meta = {
        "general.name": "Tiny Llama",
        "general.file_type": 15,  # Q4_K_M
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 8,
        "llama.attention.head_count_kv": 2,
        "llama.context_length": 2048,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [f"tok{i}" for i in range(100)],
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}
