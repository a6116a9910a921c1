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
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from ..errors import Cancelled
from ..models import Operation, OperationState
from .events import operation_publish

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The waits before each new try of a write whose connection failed: 3 s in all, enough for
# a database restart (a server back within a second or two); then the error goes up.
WRITE_RETRY_DELAYS = (0.2, 0.4, 0.8, 1.6)


def write_retried(write: Callable[[], T], *, what: str, delays=WRITE_RETRY_DELAYS) -> T:
    """Run `write` (a few statements, or one transaction of its own); retry a lost connection.

    A database restart cuts every connection: the next statement of a running download
    raised (AdminShutdown, then "the connection is closed"), and nothing reconnects a
    connection inside a task, so its end state could not be written either and the row
    stayed running until the reaper. On an OperationalError (or InterfaceError) that lost
    the connection, outside a transaction, the dead connection is closed and `write` runs
    again on a new one after a short wait, a few times. Any other error goes up at once:
    one on a connection that still works (SQLite's "database is locked" after its busy
    timeout), and one inside a transaction (it is the caller's, and only the caller can
    run it again). `write` must be safe to repeat (a conditional update, a transaction).
    """
    for delay in (*delays, None):
        raw = None
        try:
            connection.ensure_connection()
            raw = connection.connection
            return write()
        except (OperationalError, InterfaceError) as exc:
            if connection.in_atomic_block or not _lost(raw):
                raise
            connection.close()  # the next write, this one's or the caller's, connects anew
            if delay is None:
                raise
            logger.warning("%s: the database connection failed (%s); trying again in %.1f s",
                           what, str(exc).strip(), delay)  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")


def _lost(raw) -> bool:
    """Whether the driver's connection `raw` (None: none could be made) died under a write.

    Dead (psycopg's `closed` is true of a broken connection), or already replaced: a
    transaction whose rollback failed drops the connection and Django opens the next one.
    """
    return raw is None or raw is not connection.connection or getattr(raw, "closed", False)


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

        def write() -> dict | None:
            written = Operation.objects.filter(pk=op.pk, state=OperationState.RUNNING).update(
                bytes_done=op.bytes_done,
                speed=op.speed,
                eta_seconds=op.eta_seconds,
                heartbeat_at=Now(),
                updated_at=Now(),
                **values,
            )
            if not written:
                return None
            # Read back what the database wrote, so the published state is the row's state.
            row = Operation.objects.filter(pk=op.pk).values(
                "cancel_requested", "attempts", "heartbeat_at", "updated_at"
            )
            return row.first() or {}

        row = write_retried(write, what=f"progress of operation {op.pk}")
        if row is None:
            raise LostOwnership(op.pk)
        self._retries = 0
        for field, value in row.items():
            setattr(op, field, value)
        self.cancel_requested = bool(op.cancel_requested)
        operation_publish(op)


class ByteProgress:
    """Count the bytes of work of a known size through a reporter; a cancel raises.

    Records `total` as the operation's bytes_total and writes 0 done at once. Call it with
    each step's byte count (progress at most once per interval; `Cancelled(cancelled)` as
    soon as a cancel is read), and `finish()` to write the last figure.
    """

    def __init__(self, reporter: ProgressReporter, *, total: int, cancelled: str):
        self.reporter = reporter
        self.done = 0
        self._cancelled = cancelled
        reporter.op.bytes_total = total
        Operation.objects.filter(pk=reporter.op.pk).update(bytes_total=total)
        reporter.tick(0, force=True)

    def __call__(self, n: int) -> None:
        self.done += n
        self.reporter.tick(self.done)
        if self.reporter.cancel_requested:
            raise Cancelled(self._cancelled)

    def finish(self) -> None:
        self.reporter.tick(self.done, force=True)


def heartbeat_write(*, operation_id: int) -> bool:
    """Write a running operation's heartbeat now; False if it is no longer running."""
    running = Operation.objects.filter(pk=operation_id, state=OperationState.RUNNING)
    written = write_retried(
        lambda: running.update(heartbeat_at=Now()), what=f"heartbeat of operation {operation_id}"
    )
    return bool(written)


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
