"""Health reads: is this installation able to work, and what it is and runs (for the status API)."""

from __future__ import annotations

from datetime import timedelta
from importlib import metadata

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from ..models import (
    LIVE_RUNTIME_STATES,
    ActiveModel,
    Installation,
    ModelType,
    ProcessHeartbeat,
    ProcessRole,
    RuntimeInstance,
)
from ..store import get_store


def heartbeat_fresh_since():
    """Return the time after which a process heartbeat counts as fresh: two beats missed."""
    return timezone.now() - timedelta(seconds=3 * settings.PROCESS_HEARTBEAT_INTERVAL)


def health_ok() -> bool:
    """Return True if the database answers and at least one worker's heartbeat is fresh.

    One indexed query; a database that is away is an answer (False), not an error.
    """
    try:
        return ProcessHeartbeat.objects.filter(
            role=ProcessRole.WORKER, beat_at__gte=heartbeat_fresh_since()
        ).exists()
    except DatabaseError:
        return False


def system_status() -> dict:
    """Return the store, the installed and active models, the processes, free disk, version.

    `loaded` names the models a runtime has in memory, with their host and state.
    """
    store = get_store()
    total_disk, free_disk = store.disk_usage()
    fresh_since = heartbeat_fresh_since()
    active = {row.type: row.model.key for row in ActiveModel.objects.select_related("model")}
    processes = {role: [] for role in ProcessRole.values}
    for beat in ProcessHeartbeat.objects.order_by("host", "pid"):
        processes[beat.role].append(
            {
                "host": beat.host,
                "pid": beat.pid,
                "started_at": beat.started_at,
                "beat_at": beat.beat_at,
                "fresh": beat.beat_at >= fresh_since,
            }
        )
    workers_fresh = any(p["fresh"] for p in processes[ProcessRole.WORKER])
    return {
        "status": "ok" if workers_fresh else "unavailable",
        "version": _version(),
        "store_path": str(store.hub_dir),
        "installed_count": Installation.objects.count(),
        "active_models": {type_: active.get(type_) for type_ in ModelType.values},
        "loaded": [
            {"model": key, "host": host, "state": state}
            for key, host, state in RuntimeInstance.objects.filter(
                state__in=LIVE_RUNTIME_STATES
            ).values_list("model__key", "host", "state")
        ],
        "workers": processes[ProcessRole.WORKER],
        "runtimes": processes[ProcessRole.RUNTIME],
        "free_disk_bytes": free_disk,
        "disk_total_bytes": total_disk,
    }


def _version() -> str:
    try:
        return metadata.version("modelyard")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
