"""What a host offers the runtime: its RAM, what the runtime may use of it, its cores.

The supervisor of each host writes these facts into its heartbeat; the web processes of any
host read them there to choose a host and to refuse a load that cannot fit.
"""

from __future__ import annotations

import os

import psutil
from django.conf import settings


def host_facts() -> dict:
    """Return this host's memory and threads as the runtime sees them now (bytes)."""
    vm = psutil.virtual_memory()
    facts = {
        "ram_total": vm.total,
        "ram_available": vm.available,
        "reserve": settings.RUNTIME_MEMORY_RESERVE,
        "budget_setting": settings.RUNTIME_MEMORY_BUDGET,
        "threads": runtime_threads(),
        "max_loaded": settings.RUNTIME_MAX_LOADED,
        "gpu": False,  # llama-cpp-python is built for the CPU here; n_gpu_layers is passed on
    }
    facts["budget"] = host_budget(facts)
    return facts


def host_budget(facts: dict) -> int:
    """Return the bytes models may take on a host: the budget set, else its RAM less the reserve."""
    if facts.get("budget_setting"):
        return int(facts["budget_setting"])
    return max(0, int(facts.get("ram_total") or 0) - int(facts.get("reserve") or 0))


def runtime_threads() -> int:
    """Return the threads a runner uses: RUNTIME_THREADS, else the host's physical cores.

    Measured on 2 cores with Gemma 3 270M: 2 threads gave 45 tokens/s, llama-cpp-python's
    default (half the cores) 27.
    """
    if settings.RUNTIME_THREADS > 0:
        return settings.RUNTIME_THREADS
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
