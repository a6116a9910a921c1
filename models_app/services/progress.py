"""Progress, heartbeat and cancel of a running operation: the one writer of its row.

Every executor reports through a ProgressReporter; work that cannot tick (one long
delete, a nested prune) runs inside `heartbeat_kept`, so the reaper never takes a live
operation for a dead one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from ..models import Operation, OperationState
from .events import operation_publish

logger = logging.getLogger(__name__)


class LostOwnership(Exception):
    """The row left the running state under us (reaped as interrupted): stop without writing."""


class ProgressReporter:
    """Write progress, speed, ETA, tries and the heartbeat at most once per interval; read cancel.

    Speed is an exponential moving average of the per-interval rate, so one slow or
    fast second does not swing the ETA. `retried(n)` counts tries the work made again
    (a file fetched anew after a fault): the row's `attempts` grows by them at the next
    write, so it says how many tries there were in all.
    """

    def __init__(self, op: Operation, *, interval: float | None = None, clock=time.monotonic):
        self.op = op
        self.interval = settings.OPERATION_PROGRESS_INTERVAL if interval is None else interval
        self.clock = clock
        self.last_at = None
        self.last_done = None
        self.cancel_requested = False
        self._retries = 0  # counted since the last write

    def retried(self, n: int = 1) -> None:
        """Count `n` more tries (call from the thread that ticks)."""
        self._retries += n

    def tick(self, done: int, *, force: bool = False) -> None:
        now = self.clock()
        if not force and self.last_at is not None and now - self.last_at < self.interval:
            return
        op = self.op
        if self.last_at is not None and now > self.last_at:
            rate = max(0.0, (done - self.last_done) / (now - self.last_at))
            op.speed = rate if op.speed is None else 0.3 * rate + 0.7 * op.speed
        self.last_at, self.last_done = now, done
        op.bytes_done = done
        remaining = (op.bytes_total or 0) - done
        op.eta_seconds = int(remaining / op.speed) if op.speed and remaining > 0 else None
        op.heartbeat_at = timezone.now()
        values = {}
        if self._retries:
            values["attempts"] = F("attempts") + self._retries
        written = Operation.objects.filter(pk=op.pk, state=OperationState.RUNNING).update(
            bytes_done=op.bytes_done,
            speed=op.speed,
            eta_seconds=op.eta_seconds,
            heartbeat_at=Now(),
            updated_at=Now(),
            **values,
        )
        if not written:
            raise LostOwnership(op.pk)
        self._retries = 0
        # Read back what the database wrote, so the published state is the row's state.
        row = Operation.objects.filter(pk=op.pk).values(
            "cancel_requested", "attempts", "heartbeat_at", "updated_at"
        )
        for field, value in (row.first() or {}).items():
            setattr(op, field, value)
        self.cancel_requested = bool(op.cancel_requested)
        operation_publish(op)


def heartbeat_write(*, operation_id: int) -> bool:
    """Write a running operation's heartbeat now; False if it is no longer running."""
    return bool(
        Operation.objects.filter(pk=operation_id, state=OperationState.RUNNING).update(
            heartbeat_at=Now()
        )
    )


@contextlib.contextmanager
def heartbeat_kept(op: Operation, *, every: float | None = None):
    """Keep an operation's heartbeat fresh from a thread while the block runs.

    For work inside an operation that cannot tick its reporter for a while. It writes
    only the heartbeat (not `updated_at`: nothing a client sees changes), a quarter of
    the stale threshold apart, so it never writes at all in a block shorter than that.
    """
    every = every if every is not None else max(1.0, settings.OPERATION_HEARTBEAT_STALE / 4)
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                if not heartbeat_write(operation_id=op.pk):
                    return
        except Exception:
            logger.warning("heartbeat of operation %s failed", op.pk, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"heartbeat-{op.pk}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        # Not an unbounded join: on SQLite a beat may be waiting for the write lock that the
        # block's own transaction holds; it lands (or sees the row ended) once that commits.
        thread.join(timeout=5)
