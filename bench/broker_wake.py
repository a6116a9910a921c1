#!/usr/bin/env python
"""Benchmark django-q2's ORM broker with the doorbell: how soon a task is taken, idle cost.

    .venv/bin/python bench/broker_wake.py [--runs 15] [--polls 0.5 0.05]

For each poll period (`Q_POLL`; the first is the default) it starts `manage.py run` on a
fresh SQLite database and store (bench/download.py's System, no Redis), measures the
qcluster processes' CPU over 20 s with nothing queued, then downloads a 1 MiB file from the
test hub `--runs` times and splits each into: the POST's answer, the operation row's
creation to the worker's claim (`created_at` to `started_at`: the enqueue on commit, the
doorbell or the poll, the pusher, the worker), and the worker's run. Without the doorbell
a task would wait half a poll on average (0.25 s at 0.5 s): a claim far sooner than that is
the bell's doing. Medians are printed.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.download import FILE, REPO, System, start_hub  # noqa: E402
from tests.hub_server import make_repo  # noqa: E402

IDLE_SECONDS = 20.0
SIZE = 1 << 20


def cluster_cpu(system: System) -> float:
    """Return the qcluster processes' CPU seconds so far."""
    total = 0.0
    for proc in psutil.Process(system.proc.pid).children(recursive=True):
        try:
            if "qcluster" in " ".join(proc.cmdline()):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def measure(poll: float, hub: str, runs: int) -> dict:
    os.environ["Q_POLL"] = str(poll)
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-queue-") as tmp_name:
        tmp = Path(tmp_name)
        with System(hub, tmp) as system:
            system.warm_up()
            time.sleep(2.0)  # the warm-up's writes and publishes are over
            before = cluster_cpu(system)
            time.sleep(IDLE_SECONDS)
            idle = 100 * (cluster_cpu(system) - before) / IDLE_SECONDS
            rows = []
            for _ in range(runs):
                started = time.perf_counter()
                op = system.api("POST", "/models/one-gib/download")["operation"]
                answered = time.perf_counter() - started
                while op["state"] not in ("succeeded", "failed", "cancelled"):
                    time.sleep(0.05)
                    op = system.api("GET", f"/operations/{op['id']}")
                if op["state"] != "succeeded":
                    raise SystemExit(f"download failed: {op['error_code']} {op['error_message']}")
                at = {k: datetime.fromisoformat(op[k]).timestamp() for k in
                      ("created_at", "started_at", "finished_at")}  # fmt: skip
                rows.append((
                    answered, at["started_at"] - at["created_at"],
                    at["finished_at"] - at["started_at"],
                ))  # fmt: skip
                shutil.rmtree(tmp / "models" / "hub")
                system.api("POST", "/store/reconcile")
                time.sleep(0.3)
    answered, claimed, worker = (statistics.median(column) for column in zip(*rows, strict=True))
    return {"idle": idle, "answered": answered, "claimed": claimed, "worker": worker,
            "claims": sorted(r[1] for r in rows)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--polls", type=float, nargs="+", default=[0.5, 0.05])
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-queue-hub-") as hub_tmp:
        make_repo(Path(hub_tmp), REPO, {FILE: SIZE, "config.json": b"{}"})
        hub, url = start_hub(Path(hub_tmp))
        try:
            with urllib.request.urlopen(f"{url}/api/models/{REPO}") as response:
                json.loads(response.read())
            results = {poll: measure(poll, url, args.runs) for poll in args.polls}
        finally:
            hub.terminate()
            hub.wait()
    print(
        f"\nthe ORM broker with the doorbell, 1 MiB downloads, median of {args.runs}; load"
        f" average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)"
    )
    print(f"  {'Q_POLL':>7}  {'idle cluster':>12}  {'POST':>7}  {'row -> claim':>12}  "
          f"{'worker':>7}  {'half a poll':>11}  claims (ms)")  # fmt: skip
    for poll, r in results.items():
        claims = ", ".join(f"{c * 1000:.0f}" for c in r["claims"])
        print(
            f"  {poll:>6}s  {r['idle']:>10.2f} %  {r['answered'] * 1000:>5.0f}ms  "
            f"{r['claimed'] * 1000:>10.0f}ms  {r['worker'] * 1000:>5.0f}ms  "
            f"{poll * 500:>9.0f}ms  {claims}"
        )


if __name__ == "__main__":
    main()
