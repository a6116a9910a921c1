#!/usr/bin/env python
"""Time a fresh process's first `Llama()` load of Gemma 270M under malloc settings.

    .venv/bin/python bench/load_faults.py [--rounds 9]

Each round starts one fresh process per setting (in a rotating order) and times its
first load (n_ctx 4096, 2 threads), with its minor page faults and CPU seconds:
  - cold: glibc's defaults, what a runner starts with (the reference),
  - huge pages: HUGE_PAGES, the tunables runners started with before (huge pages for the
    heap, a fixed mmap threshold), dropped for what this prints (processes.py),
  - warmed heap: what a spare runner does while it waits (runner.heap_warm,
    RUNTIME_SPARE_HEAP's default 64 MiB), untimed, before its first load,
  - second load: a process that loaded the model once before (timed the second time).
Medians are printed; `huge pages / cold`, `warmed heap / cold` and `cold / second load` are
the ratios.
"""

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HUGE_PAGES = "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=33554432"
sys.path.insert(0, str(ROOT))

from tests.gemma import gemma_path  # noqa: E402

ONE = """
import resource, sys, time
import llama_cpp
def load():
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=4096, n_threads=2, n_threads_batch=2,
                          verbose=False)
    wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    return llm, wall, r1.ru_minflt - r0.ru_minflt, cpu
if sys.argv[2] == "twice":
    llm = load()[0]
    llm.close()
if sys.argv[2] == "warm":
    from models_app.runtime.runner import heap_warm
    heap_warm(64 * 1024**2)
_, wall, faults, cpu = load()
print(wall, faults, cpu)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    gguf = str(gemma_path())
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    settings = {
        "cold": (base, "once"),
        "huge pages": (dict(base, GLIBC_TUNABLES=HUGE_PAGES), "once"),
        "warmed heap": (base, "warm"),
        "second load": (base, "twice"),
    }
    got = {name: [] for name in settings}
    names = list(settings)
    for n in range(args.rounds):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            env, mode = settings[name]
            out = subprocess.run(
                [sys.executable, "-c", ONE, gguf, mode], env=env, capture_output=True,
                text=True, check=True, cwd=ROOT,
            ).stdout.split()  # fmt: skip
            got[name].append(tuple(float(x) for x in out))
    print(f"first Llama() load of Gemma 270M in a fresh process, median of {args.rounds}")
    print(f"  huge pages: GLIBC_TUNABLES={HUGE_PAGES}")
    medians = {}
    for name, rows in got.items():
        wall, faults, cpu = (statistics.median(r[i] for r in rows) for i in range(3))
        medians[name] = wall
        runs = ", ".join(f"{r[0]:.2f}" for r in rows)
        print(f"  {name:<12} {wall:6.3f} s  {faults:8.0f} faults  {cpu:6.3f} s CPU   runs: {runs}")
    print(f"  huge pages / cold    {medians['huge pages'] / medians['cold']:.2f}")
    print(f"  warmed heap / cold   {medians['warmed heap'] / medians['cold']:.2f}")
    print(f"  cold / second load   {medians['cold'] / medians['second load']:.2f}")


if __name__ == "__main__":
    main()
