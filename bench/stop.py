#!/usr/bin/env python
"""Time how long `manage.py run` takes to stop when nothing is mid-write.

    .venv/bin/python bench/stop.py [--runs 5] [--signal TERM|INT] [--background]

Each run migrates a fresh SQLite file, starts `manage.py run` (two daphne processes, one
qcluster worker), waits until daphne answers and the worker's heartbeat is in the
database, sends the signal and times until `run` has exited and no process of its tree is
left. `--background` starts it as a shell's background job does (SIGINT ignored), the way
the old 15 s stop showed. Prints each time and the median. Goal (issue 10): under 3 s.
"""

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import free_port, wait_for_url, wait_until  # noqa: E402


def one_stop(sig: int, *, background: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="modelyard-stop-") as tmp:
        db = Path(tmp) / "run.sqlite3"
        env = dict(
            os.environ,
            DATABASE_URL=f"sqlite:///{db}",
            MODELS_DIR=str(Path(tmp) / "models"),
            LEGACY_HUB_DIR=str(Path(tmp) / "no-legacy"),
            Q_WORKERS="1",
            WEB_PROCESSES="2",
            LOG_LEVEL="WARNING",
        )
        env.pop("REDIS_URL", None)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        port = free_port()

        def as_background_job():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        proc = subprocess.Popen(
            [*manage, "run", "--port", str(port)],
            cwd=ROOT, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=as_background_job if background else None,
        )  # fmt: skip
        try:
            wait_for_url(f"http://127.0.0.1:{port}/admin/login/", timeout=60, proc=proc)

            def worker_beats() -> bool:
                with sqlite3.connect(db) as conn:
                    query = "SELECT count(*) FROM models_app_processheartbeat"
                    return conn.execute(query).fetchone()[0] > 0

            wait_until(worker_beats, timeout=60, what="the worker's heartbeat", proc=proc)
            tree = psutil.Process(proc.pid).children(recursive=True)
            started = time.monotonic()
            proc.send_signal(sig)
            proc.wait(timeout=60)
            psutil.wait_procs(tree, timeout=60)
            return time.monotonic() - started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--signal", choices=["TERM", "INT"], default="TERM")
    parser.add_argument("--background", action="store_true")
    args = parser.parse_args()
    sig = getattr(signal, f"SIG{args.signal}")
    times = []
    for n in range(1, args.runs + 1):
        took = one_stop(sig, background=args.background)
        times.append(took)
        print(f"run {n}: stopped in {took:.2f} s", flush=True)
    print(f"median stop time over {len(times)} runs: {statistics.median(times):.2f} s (goal < 3 s)")


if __name__ == "__main__":
    main()
