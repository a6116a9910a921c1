"""Measure what a loaded GGUF costs in memory, to calibrate models_app/runtime/memory.py.

    .venv/bin/python bench/runtime_memory.py [path.gguf] [--n-ctx 2048 4096 8192]

It measures resident memory (psutil RSS), not time, so it needs no idle machine. For each
n_ctx, in fresh processes:

- in process: the RSS growth of `Llama(path, n_ctx=..., n_threads=2)` followed by one short
  completion, and the compute and KV buffer sizes llama.cpp reports (its verbose log);
- a runner: `python -m models_app.runtime.runner` (the runtime's runner program) loads the
  file and serves one short completion over HTTP; its RSS after that;

and once, the RSS of a bare `python -c "import llama_cpp.server.app, uvicorn"` (what a
runner weighs before any model). The runner is also measured with llama_cpp.server's
logits_all turned off, after a 480-token prompt, and with its context 90% full. Then it
prints models_app's estimate beside each measurement. The file defaults to the Gemma 3
270M test file (tests/gemma.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The capital of France is"
# About 480 tokens: a prompt that fills most of a 512-token batch (the worst case of one batch).
LONG_PROMPT = " ".join(f"item {i}," for i in range(160)) + " the last item is"
MAX_TOKENS = 16

IN_PROCESS = r"""
import json, os, sys, psutil
proc = psutil.Process()
before = proc.memory_info().rss
from llama_cpp import Llama
imported = proc.memory_info().rss
llm = Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=2, verbose=True)
loaded = proc.memory_info().rss
llm.create_completion(sys.argv[3], max_tokens=int(sys.argv[4]))
done = proc.memory_info().rss
print(json.dumps({"before": before, "imported": imported, "loaded": loaded, "done": done,
                  "n_params": llm._model.n_params()}))
"""


def _mib(n: int) -> str:
    return f"{n / 2**20:8.1f} MiB"


def in_process(path: str, n_ctx: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, path, str(n_ctx), PROMPT, str(MAX_TOKENS)],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    compute = re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", out.stderr)
    kv = re.findall(r"KV buffer size =\s+([\d.]+) MiB", out.stderr)
    figures["compute_mib"] = float(compute[-1]) if compute else None
    figures["kv_mib"] = sum(float(k) for k in kv) if kv else None
    figures["growth"] = figures["done"] - figures["imported"]
    return figures


def bare_imports() -> int:
    code = "import psutil, llama_cpp.server.app, uvicorn; print(psutil.Process().memory_info().rss)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


# The runner program with llama_cpp.server's logits_all default turned off: the server's
# ModelSettings defaults it to True, which keeps n_ctx x n_vocab float32 scores (1 MiB a
# token with Gemma's 262K vocabulary) and asks llama.cpp for the logits of every token.
RUNNER_WITHOUT_LOGITS_ALL = """
import sys
import llama_cpp.server.settings as settings
class ModelSettings(settings.ModelSettings):
    logits_all: bool = False
settings.ModelSettings = ModelSettings
from models_app.runtime import runner
sys.exit(runner.main())
"""


def runner(path: str, n_ctx: int, prompt: str = PROMPT, logits_all: bool = True) -> int:
    import psutil

    key = secrets.token_hex(16)
    program = (
        ["-m", "models_app.runtime.runner"] if logits_all else ["-c", RUNNER_WITHOUT_LOGITS_ALL]
    )
    proc = subprocess.Popen(
        [sys.executable, *program],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        spare = json.loads(proc.stdout.readline())
        assert spare["event"] == "spare", spare
        spec = {"model_path": path, "n_ctx": n_ctx, "n_threads": 2, "api_key": key, "port": 0}
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready", ready
        body = json.dumps({"prompt": prompt, "max_tokens": MAX_TOKENS}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{ready['port']}/v1/completions",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        # A context 90% full is a long prompt to process on two shared cores.
        with urllib.request.urlopen(request, timeout=900) as response:
            json.loads(response.read())
        time.sleep(0.2)  # let the server's response buffers settle before reading RSS
        return psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    parser = argparse.ArgumentParser()
    parser.add_argument("path", nargs="?")
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[2048, 4096, 8192])
    args = parser.parse_args()
    if args.path is None:
        from tests.gemma import gemma_path

        args.path = str(gemma_path())

    from models_app.gguf import gguf_facts, gguf_header_of
    from models_app.runtime.memory import memory_estimate

    facts = gguf_facts(gguf_header_of(args.path))
    bare = bare_imports()
    print(f"file {args.path}: {Path(args.path).stat().st_size:,} bytes")
    print(f"bare runner imports: RSS {_mib(bare)} ({bare:,})")
    for n_ctx in args.n_ctx:
        inproc = in_process(args.path, n_ctx)
        rss = runner(args.path, n_ctx)
        rss_long = runner(args.path, n_ctx, LONG_PROMPT)
        lean = runner(args.path, n_ctx, logits_all=False)
        lean_long = runner(args.path, n_ctx, LONG_PROMPT, logits_all=False)
        # A prompt of 90% of the context (" the" is one token): the attention scores of full
        # batches over a full context are resident then.
        full_prompt = "the" + " the" * int(n_ctx * 0.9)
        lean_full = runner(args.path, n_ctx, full_prompt, logits_all=False)
        estimate = memory_estimate(facts=facts, n_ctx=n_ctx)
        error = (estimate.total - rss) / rss
        print(
            f"n_ctx {n_ctx}: in process growth {_mib(inproc['growth'])}"
            f" (llama.cpp compute {inproc['compute_mib']} MiB, KV {inproc['kv_mib']} MiB);"
            f" runner RSS {_mib(rss)} ({rss:,}), after a 480-token prompt {_mib(rss_long)};"
            f" without logits_all {_mib(lean)} ({lean:,}), after 480 tokens {_mib(lean_long)},"
            f" with the context 90% full {_mib(lean_full)} ({lean_full:,});"
            f" estimate {_mib(estimate.total)} ({estimate.as_dict()}) {error:+.1%}"
            f" of the runner, {(estimate.total - lean) / lean:+.1%} without logits_all,"
            f" {(estimate.total - lean_full) / lean_full:+.1%} with the context full"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
