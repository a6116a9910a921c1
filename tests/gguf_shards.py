"""Split (sharded) GGUF files, made with the `gguf` package as llama.cpp's gguf-split makes them.

`gguf_split` copies a GGUF into `<stem>-0000N-of-0000K.gguf` files with GGUFWriter's own
split output (`split_max_tensors`): the first shard carries every metadata key, each shard
the split keys (uint16 split.no, uint16 split.count, int32 split.tensors.count) and its
tensors. `gemma_split` is the real Gemma file (tests/gemma.py) split in three, made once
and kept beside it (GEMMA_CACHE, default ~/.cache/modelyard-tests), keyed by its sha256.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import gguf
import pytest

from tests.gemma import SHA256 as GEMMA_SHA256
from tests.gemma import gemma_path


def gguf_split(source: Path, dest: Path, *, stem: str, parts: int) -> list[Path]:
    """Write `source` as `parts` shards `dest/<stem>-0000N-of-0000K.gguf`; return them in order."""
    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    per_shard = math.ceil(len(reader.tensors) / parts)
    dest.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(dest / f"{stem}.gguf", arch, split_max_tensors=per_shard)
    for field in reader.fields.values():
        # GGUF.* are the reader's virtual fields; the writer adds the architecture itself.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        if field.name.startswith("split."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
            tensor.tensor_type,
        )  # fmt: skip
    count = len(writer.tensors)
    assert count == parts, f"{len(reader.tensors)} tensors made {count} shards, not {parts}"
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    return [dest / f"{stem}-{i:05d}-of-{parts:05d}.gguf" for i in range(1, parts + 1)]


GEMMA_SPLIT_STEM = "gemma-3-270m-q4_k_m"
GEMMA_SPLIT_PARTS = 3


def gemma_split_paths() -> list[Path]:
    """Return the three shards of the real Gemma file, splitting it on first use."""
    source = gemma_path()
    cache = source.parent / f"gemma-split-{GEMMA_SHA256[:16]}"
    names = [
        f"{GEMMA_SPLIT_STEM}-{i:05d}-of-{GEMMA_SPLIT_PARTS:05d}.gguf"
        for i in range(1, GEMMA_SPLIT_PARTS + 1)
    ]
    done = cache / "complete"
    if done.exists() and all((cache / n).is_file() for n in names):
        return [cache / n for n in names]
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    paths = gguf_split(source, tmp, stem=GEMMA_SPLIT_STEM, parts=GEMMA_SPLIT_PARTS)
    assert [p.name for p in paths] == names
    (tmp / "complete").write_text(GEMMA_SHA256)
    shutil.rmtree(cache, ignore_errors=True)
    os.replace(tmp, cache)
    return [cache / n for n in names]


@pytest.fixture(scope="session")
def gemma_split() -> list[Path]:
    """The real Gemma GGUF split in three shards (shared by every test of the session)."""
    return gemma_split_paths()
