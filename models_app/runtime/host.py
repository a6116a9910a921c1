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


def _setting(facts: dict, name: str, setting: str):
    """Return a host's own figure from its facts; this process's setting where they lack it."""
    return facts[name] if name in facts else getattr(settings, setting)


def host_reserve(facts: dict) -> int:
    """Return the RAM a host keeps for everything but models (RUNTIME_MEMORY_RESERVE)."""
    return int(_setting(facts, "reserve", "RUNTIME_MEMORY_RESERVE") or 0)


def host_budget_set(facts: dict) -> int | None:
    """Return the budget set for a host (RUNTIME_MEMORY_BUDGET), or None."""
    return _setting(facts, "budget_setting", "RUNTIME_MEMORY_BUDGET") or None


def host_budget(facts: dict) -> int:
    """Return the bytes models may take on a host: the budget set, else its RAM less the reserve.

    The one rule for a host's capacity: the fit of every card, the refusal of a load and
    the eviction that makes room all start from it (and from `host_room`).
    """
    budget = host_budget_set(facts)
    if budget:
        return int(budget)
    return max(0, int(facts.get("ram_total") or 0) - host_reserve(facts))


def host_room(facts: dict, *, held: int = 0) -> int:
    """Return what one more model may take on a host now.

    The budget less what its loaded models hold (`held`), within the RAM available now less
    the reserve: the Vibrant spec's `availableRAM - 2 GB`, past which the host would swap
    (or the runner be killed) even where the budget has room.
    """
    ram_left = int(facts.get("ram_available") or 0) - host_reserve(facts)
    return max(0, min(host_budget(facts) - held, ram_left))


def runtime_threads() -> int:
    """Return the threads a runner uses: RUNTIME_THREADS, else the host's physical cores.

    Measured on 2 cores with Gemma 3 270M: 2 threads gave 45 tokens/s, llama-cpp-python's
    default (half the cores) 27.
    """
    if settings.RUNTIME_THREADS > 0:
        return settings.RUNTIME_THREADS
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
