"""Process heartbeats: each worker (and, later, each runtime supervisor) says it is alive.

A worker starts a keeper thread when it spawns (models_app/signals.py); the thread writes
the process's row every PROCESS_HEARTBEAT_INTERVAL seconds. `/healthz` and the status
endpoint read the rows; the supervisor of `manage.py run` removes the rows of the
processes it saw die, and the reaper those that went stale anywhere.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psutil
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from ..models import ProcessHeartbeat
from .operations import host_name

logger = logging.getLogger(__name__)

# One keeper per process and role: a forked child gets a copy of this dict and a pid of its
# own, so it starts its own keeper (threads are not copied by fork).
_keepers: dict[tuple[int, str], HeartbeatKeeper] = {}


@dataclass
class HeartbeatKeeper:
    """The thread that beats one process's heartbeat; `stop()` ends it."""

    thread: threading.Thread
    stopping: threading.Event

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def heartbeat_write(*, role: str, facts: dict | None = None) -> ProcessHeartbeat:
    """Write this process's heartbeat now (its row is created on the first beat).

    `facts`: what a runtime supervisor tells about its host (memory, threads).
    """
    started = datetime.fromtimestamp(psutil.Process().create_time(), tz=UTC)
    row, _ = ProcessHeartbeat.objects.update_or_create(
        host=host_name(),
        pid=os.getpid(),
        defaults={
            "role": role,
            "beat_at": timezone.now(),
            "pgid": os.getpgrp(),
            **({"facts": facts} if facts is not None else {}),
        },
        create_defaults={
            "facts": facts or {},
            "role": role,
            "beat_at": timezone.now(),
            "pgid": os.getpgrp(),
            "started_at": started,
        },
    )
    # A reused pid: the new process's start replaces the old one's.
    if abs((row.started_at - started).total_seconds()) > 1:
        ProcessHeartbeat.objects.filter(pk=row.pk).update(started_at=started)
        row.started_at = started
    return row


def heartbeat_keeper_start(*, role: str, interval: float | None = None) -> HeartbeatKeeper:
    """Start this process's heartbeat thread (once per process and role); return it.

    The first beat is written before this returns, so a worker is visible before it takes
    its first task. A failed beat (the database briefly away) is logged and retried. The
    thread is a daemon: it ends with its process, or with `stop()`.
    """
    key = (os.getpid(), role)
    if (keeper := _keepers.get(key)) is not None and keeper.thread.is_alive():
        return keeper
    every = interval if interval is not None else settings.PROCESS_HEARTBEAT_INTERVAL
    _beat_once(role, close=False)
    stopping = threading.Event()

    def beat() -> None:
        try:
            while not stopping.wait(every):
                _beat_once(role, close=True)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"{role}-heartbeat", daemon=True)
    thread.start()
    _keepers[key] = keeper = HeartbeatKeeper(thread, stopping)
    return keeper


def _beat_once(role: str, *, close: bool) -> None:
    try:
        if close:
            close_old_connections()  # this thread's connection, if the server dropped it
        heartbeat_write(role=role)
    except Exception:
        logger.warning("heartbeat of %s %s failed", role, os.getpid(), exc_info=True)
        if close:
            connection.close()


def heartbeat_group_members(*, host: str, leaders: Collection[int]) -> set[int]:
    """Return the pids on `host` whose heartbeat names one of these process groups."""
    return set(
        ProcessHeartbeat.objects.filter(host=host, pgid__in=list(leaders)).values_list(
            "pid", flat=True
        )
    )


def heartbeats_forget(*, host: str, pids: Collection[int]) -> int:
    """Remove the rows of these processes on `host` (their supervisor saw them end)."""
    if not pids:
        return 0
    deleted, _ = ProcessHeartbeat.objects.filter(host=host, pid__in=list(pids)).delete()
    return deleted


def heartbeats_prune(*, now=None) -> int:
    """Remove rows that stopped beating long ago (ten times the stale threshold)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=10 * settings.OPERATION_HEARTBEAT_STALE)
    deleted, _ = ProcessHeartbeat.objects.filter(beat_at__lt=cutoff).delete()
    return deleted
