"""Test-load a GGUF's vocabulary only, in a short process of its own.

A file llama.cpp cannot read may crash the process that reads it (a SIGSEGV in C code), so
the load runs in a child Python: a crash ends the child, never the worker that asked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Exit status of the child when llama_cpp is not importable: the check is skipped.
_NO_LLAMA_CPP = 3

_PROGRAM = r"""
import json, sys
try:
    import llama_cpp
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(3)
llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
print(json.dumps({"n_vocab": llm.n_vocab()}))
llm.close()
"""


@dataclass(frozen=True)
class VocabLoad:
    ok: bool
    skipped: bool
    message: str
    n_vocab: int | None = None


def vocab_load_check(path: Path, *, timeout: float = 120.0) -> VocabLoad:
    """Load only the vocabulary of the GGUF at `path` with llama-cpp-python, in a child process.

    `skipped` when llama_cpp cannot be imported here; not `ok` when the load failed, the
    child died of a signal or ran out of `timeout` seconds.
    """
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROGRAM, str(path)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return VocabLoad(False, False, f"the vocabulary load took longer than {timeout:.0f} s")
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if done.returncode == _NO_LLAMA_CPP:
        return VocabLoad(True, True, f"llama_cpp is not importable ({answer.get('error', '?')})")
    if done.returncode == 0 and "n_vocab" in answer:
        n = answer["n_vocab"]
        return VocabLoad(True, False, f"vocabulary of {n:,} tokens loaded", n_vocab=n)
    if done.returncode < 0:
        return VocabLoad(False, False, f"llama.cpp crashed loading it (signal {-done.returncode})")
    last = (done.stderr.strip().splitlines() or ["no message"])[-1]
    return VocabLoad(False, False, f"llama.cpp could not load it: {last[:300]}")
