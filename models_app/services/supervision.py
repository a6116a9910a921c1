"""What the supervisor of `manage.py run` does to the database when its children live and die.

The supervisor (models_app/supervisor.py) knows processes; these know operations. They all
run in the supervisor's process, on this host.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from django.db import close_old_connections, connection

from ..models import OperationKind
from .heartbeats import heartbeat_group_members, heartbeats_forget, heartbeats_prune
from .operations import (
    host_name,
    operations_interrupt_owned,
    operations_reap,
    operations_requeue,
)
from .runtime import runtime_orphans_fail

logger = logging.getLogger(__name__)

# What a stop interrupts at once, so that its worker stops at its next progress write:
# a download resumes from its partial files. Anything else (a delete removing files) is
# left to finish within the stop timeout.
RESUMABLE_KINDS = (OperationKind.DOWNLOAD,)


def supervisor_tick() -> dict:
    """Reap operations whose heartbeat went stale (any host), enqueue again the queued ones
    whose task the broker lost, fail the loads queued for a host without a runtime, and
    remove long-dead heartbeat rows."""
    _between_units_of_work()
    return {
        "interrupted": operations_reap(),
        "requeued": operations_requeue(),
        "runtime_stranded": runtime_orphans_fail(),
        "heartbeats_removed": heartbeats_prune(),
    }


def workers_ended(pids: Collection[int], reason: str) -> list[int]:
    """Interrupt the running operations of these dead processes of this host, at once.

    A dead group leader (the qcluster) takes its group with it: its workers are found by
    their heartbeats too, also one that started after the supervisor last looked.
    """
    _between_units_of_work()
    host = host_name()
    pids = set(pids) | heartbeat_group_members(host=host, leaders=pids)
    interrupted = operations_interrupt_owned(
        host=host, pids=pids, reason=f"Its worker process died ({reason})."
    )
    heartbeats_forget(host=host, pids=pids)
    if interrupted:
        logger.warning("marked operations %s interrupted: %s", interrupted, reason)
    return interrupted


def workers_stopping(pids: Collection[int]) -> list[int]:
    """Interrupt the downloads these processes run, so that their workers stop now."""
    _between_units_of_work()
    interrupted = operations_interrupt_owned(
        host=host_name(),
        pids=pids,
        kinds=RESUMABLE_KINDS,
        reason="Modelyard stopped while it ran.",
    )
    if interrupted:
        logger.warning("stopping: marked downloads %s interrupted", interrupted)
    return interrupted


def _between_units_of_work() -> None:
    """Drop this long-lived process's connection if the server closed it or it is too old.

    As Django does between requests; never inside a transaction (a caller's, or a test's).
    """
    if not connection.in_atomic_block:
        close_old_connections()
