"""What the machine was doing before a benchmark measured: its idle CPU, and what else ran.

Shared by the benches: a figure measured beside other work (a left-over server, another
program using the cores) must say so.
"""

from __future__ import annotations

import contextlib

import psutil

# Our own processes that a previous run may have left behind.
OURS = ("daphne", "qcluster", "manage.py", "hub_server", "models_app.runtime.runner")


def machine_before(label: str, seconds: float = 3.0) -> dict:
    """Print and return the machine's idle CPU and the busy or left-over processes now.

    `label` starts the printed line ("before measuring", "default: before the setup").
    This process and its children are not counted.
    """
    me = psutil.Process()
    ours = {me.pid, *(p.pid for p in me.children(recursive=True))}
    procs = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)  # the first call only starts the count
            procs.append(proc)
    idle = 100.0 - psutil.cpu_percent(interval=seconds)
    busy, leftover = [], []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            cpu = proc.cpu_percent(None)
            line = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])[:90]
            if proc.pid in ours:
                continue
            if any(word in line for word in OURS):
                leftover.append(f"{proc.pid} {line}")
            elif cpu >= 2.0:
                busy.append(f"{proc.pid} {cpu:.0f}% {line}")
    print(f"{label}, the machine was {idle:.0f}% idle over {seconds:.0f} s")
    for line in leftover:
        print(f"  left over from an earlier run: {line}")
    for line in busy:
        print(f"  busy: {line}")
    return {"idle_before": idle, "leftover": leftover, "busy": busy}
