"""The runtime supervisor of one host (`manage.py runtime`): the loop that owns the runners.

It sleeps in one `select` until something needs it: a ring of its doorbell (a load or
unload queued for this host, a delete that marked an instance `unloading`, a request that
brought an expiry forward), a runner's pipe (a runner that died: its instance fails at
once, and the next request loads it again), the soonest keep-alive of its instances to
end, the next heartbeat (every PROCESS_HEARTBEAT_INTERVAL, with the host's facts and its
runners' memory), or RUNTIME_POLL_INTERVAL, the look for work that a lost ring would
have announced. Each load or unload runs in a thread of its own, through the engine the
command hands in. At start it cleans up what a previous supervisor of this host left
(its runners die with it; their rows go), so the database agrees with the processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import psutil
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from ...errors import InvalidState
from ...models import (
    ACTIVE_STATES,
    LIVE_RUNTIME_STATES,
    RUNTIME_KINDS,
    EventKind,
    Operation,
    OperationState,
    ProcessHeartbeat,
    ProcessRole,
    RuntimeInstance,
    RuntimeState,
)
from ...runtime.host import host_facts
from ...runtime.processes import Doorbell, RunnerTable, is_runner, kill_process
from ...selectors.health import heartbeat_fresh_since
from ..events import event_record, runtime_publish
from ..heartbeats import heartbeat_write, heartbeats_forget
from ..operations import host_name, operations_interrupt_owned
from .executing import (
    IN_FLIGHT_LEASE,
    _stop_instance,
    _unload_instance,
    runtime_runner_died,
    runtime_runners_attach,
)

logger = logging.getLogger(__name__)

# How long an instance loaded with keep_alive 0 waits for its first request.
FIRST_REQUEST_GRACE = timedelta(seconds=10)


class RuntimeSupervisor:
    """Run this host's runtime until SIGTERM or SIGINT; then stop every runner."""

    def __init__(
        self,
        *,
        run_operation: Callable[[int], object],
        table: RunnerTable | None = None,
        poll: float | None = None,
    ):
        self.run_operation = run_operation
        self.table = table or RunnerTable(
            keep_spare=settings.RUNTIME_SPARE_RUNNER, spare_heap=settings.RUNTIME_SPARE_HEAP
        )
        self.poll = poll if poll is not None else settings.RUNTIME_POLL_INTERVAL
        self.host = host_name()
        self.stopping = threading.Event()
        self.busy: dict[str, threading.Thread] = {}  # "op:<id>" / "instance:<id>" → thread
        self.doorbell = Doorbell(settings.RUNTIME_BIND)
        self._wake_r, self._wake_w = os.pipe()  # a signal or a finished thread wakes the loop
        os.set_blocking(self._wake_w, False)
        self._acted_at = 0.0
        self._beat_at = 0.0
        self._expires_at = float("inf")  # monotonic: when act() must look again

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        def on_signal(*_):
            self.stopping.set()
            self.wake()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        runtime_runners_attach(self.table)
        try:
            self.start()
            while not self.stopping.is_set():
                try:
                    self.tick()
                except Exception:  # the database briefly away: log, reconnect next tick
                    logger.exception("runtime supervisor tick failed")
                    connection.close()
                self.wait()
        finally:
            self.shutdown()
            runtime_runners_attach(None)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait(self) -> None:
        """Sleep until a ring (a load or unload queued), a runner's death, a signal, or the
        poll interval: the loop costs nothing while nothing happens, and misses nothing."""
        runners = list(self.table.loaded.values())
        waiting = [self.doorbell, self._wake_r, *runners]
        try:
            readable, _, _ = select.select(waiting, [], [], self.sleep_for())
        except (OSError, ValueError):  # a runner's pipe closed meanwhile
            return
        for source in readable:
            if source is self.doorbell:
                self._acted_at = 0.0  # rung: look for expired and marked instances now too
            if source is self._wake_r:  # a signal, or a thread ended (a load, an unload)
                self._acted_at = 0.0
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
            else:
                source.drain()

    def sleep_for(self) -> float:
        """Return the seconds until the loop must tick though nothing woke it."""
        due = min(
            self._beat_at + settings.PROCESS_HEARTBEAT_INTERVAL,  # the next heartbeat
            self._acted_at + self.poll,  # the look for work whose ring was lost
            self._expires_at,  # the soonest keep-alive of this host's instances to end
        )
        return max(0.0, due - time.monotonic())

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def start(self) -> dict:
        """Clean up what an earlier supervisor of this host left; beat the first heartbeat.

        Refuse to start beside another live supervisor of the same host name (its runners
        would be killed as leftovers): every host needs a HOST_NAME of its own.
        """
        other = (
            ProcessHeartbeat.objects.filter(
                role=ProcessRole.RUNTIME, host=self.host, beat_at__gte=heartbeat_fresh_since()
            )
            .exclude(pid=os.getpid())
            .first()
        )
        if other is not None and psutil.pid_exists(other.pid):
            raise InvalidState(
                f"A runtime supervisor is already running on {self.host} (pid {other.pid}); "
                "give each host its own HOST_NAME.",
                details={"host": self.host, "pid": other.pid},
            )
        cleaned = runtime_host_cleanup(host=self.host, reason="the runtime supervisor restarted")
        # The rows of this host's earlier supervisors: none is alive (checked above).
        heartbeats_forget(host=self.host, pids=_supervisors(self.host)[1])
        self.beat()
        self.table.refill()
        logger.info(
            "runtime supervisor on %s (pid %s): %s threads per runner, cleaned %s",
            self.host,
            os.getpid(),
            host_facts()["threads"],
            cleaned,
        )
        return cleaned

    def tick(self) -> None:
        # One connection for the whole loop (on SQLite Django would open one per tick:
        # CONN_MAX_AGE is 0 there); checked with each heartbeat, replaced after an error.
        self._reap_threads()
        self.claim()
        self.watch()
        now = time.monotonic()
        if now - self._acted_at >= self.poll or now >= self._expires_at:
            self._acted_at = now
            self.act()
        if now - self._beat_at >= settings.PROCESS_HEARTBEAT_INTERVAL:
            self.beat()
        if not any(key.startswith("op:") for key in self.busy):
            # Not while a load runs: a new spare's imports (a third of a second of a core)
            # would compete with it for the CPU.
            self.table.refill()

    # --- the parts of a tick ------------------------------------------------------------

    def claim(self) -> None:
        """Start a thread for each load or unload queued for this host."""
        queued = Operation.objects.filter(
            state=OperationState.QUEUED, kind__in=RUNTIME_KINDS, worker_host=self.host
        ).values_list("id", flat=True)
        for op_id in queued:
            self._spawn(f"op:{op_id}", self.run_operation, op_id)

    def watch(self) -> None:
        """Fail the instance of every runner that died on its own."""
        for instance_id, runner in list(self.table.loaded.items()):
            if runner.alive() or runner.stopping:
                continue
            self.table.loaded.pop(instance_id, None)
            code = runner.exit_code()
            logger.error("runner of instance %s (pid %s) died: %s", instance_id, runner.pid, code)
            runtime_runner_died(instance_id=instance_id, code=code)

    def act(self) -> None:
        """Unload what outlived its keep-alive, and what a delete marked `unloading`."""
        now = timezone.now()
        mine = RuntimeInstance.objects.select_related("model", "operation").filter(host=self.host)
        lease_from = now - IN_FLIGHT_LEASE
        expired, dues = [], []
        for instance in mine.filter(state=RuntimeState.READY, expires_at__isnull=False):
            due = _due(instance)
            if due > now:
                dues.append(due)
            elif instance.in_flight == 0 or (
                instance.last_request_at is not None and instance.last_request_at < lease_from
            ):
                expired.append(instance)
        # The loop sleeps until the soonest expiry left (a request that brings an expiry
        # forward rings the doorbell).
        self._expires_at = (
            time.monotonic() + (min(dues) - now).total_seconds() if dues else float("inf")
        )
        for instance in expired:
            if Operation.objects.filter(model=instance.model, state__in=ACTIVE_STATES).exists():
                continue  # the operation holding it decides (a load renews, a delete unloads)
            reason = (
                "keep_alive 0: after its last request"
                if instance.keep_alive == 0
                else f"keep-alive of {instance.keep_alive} s expired"
            )
            self._spawn(
                f"instance:{instance.pk}", _unload_instance, instance, reason=reason, parent=None
            )
        marked = mine.filter(state=RuntimeState.UNLOADING).exclude(
            operation__kind__in=RUNTIME_KINDS
        )
        for instance in marked:
            reason = (
                f"{instance.operation.kind} #{instance.operation_id}"
                if instance.operation_id
                else "asked"
            )
            self._spawn(
                f"instance:{instance.pk}",
                _stop_instance,
                instance,
                reason=f"for {reason}",
                operation=None,
            )

    def beat(self) -> None:
        """Write the heartbeat with the host's facts; record each runner's memory."""
        self._beat_at = time.monotonic()
        _between_units_of_work()
        facts = host_facts() | {
            "doorbell": self.doorbell.port,
            "address": settings.RUNTIME_ADVERTISE_ADDRESS,
        }
        heartbeat_write(role=ProcessRole.RUNTIME, facts=facts)
        changed = False
        for instance_id, runner in list(self.table.loaded.items()):
            rss = runner.rss()
            if rss is not None:
                changed |= bool(
                    RuntimeInstance.objects.filter(pk=instance_id, state=RuntimeState.READY)
                    .exclude(rss=rss)
                    .update(rss=rss)
                )
        if changed:
            runtime_publish()

    def shutdown(self) -> None:
        """Stop every runner and forget this host's instances and heartbeat."""
        self.table.stop_all()
        self.doorbell.close()
        for thread in list(self.busy.values()):
            thread.join(timeout=5)
        try:
            _between_units_of_work()
            runtime_host_cleanup(host=self.host, reason="the runtime supervisor stopped")
            heartbeats_forget(host=self.host, pids=[os.getpid()])
        except Exception:
            logger.exception("runtime supervisor could not clean up at stop")

    # --- threads ------------------------------------------------------------------------

    def _spawn(self, key: str, target, *args, **kwargs) -> None:
        if key in self.busy:
            return

        def body():
            try:
                target(*args, **kwargs)
            except Exception:
                logger.exception("runtime %s failed", key)
            finally:
                connection.close()  # this thread's own connection
                self.wake()  # a loaded runner is now watched; the next tick sees the thread end

        thread = threading.Thread(target=body, name=f"runtime-{key}", daemon=True)
        self.busy[key] = thread
        thread.start()

    def _reap_threads(self) -> None:
        for key, thread in list(self.busy.items()):
            if not thread.is_alive():
                self.busy.pop(key, None)


def _due(instance: RuntimeInstance):
    """Return when a ready instance may be unloaded for its keep-alive.

    keep_alive 0 expires at the load: an instance that has served nothing yet waits
    FIRST_REQUEST_GRACE after its load (the request that loaded it, JIT, is on its way).
    """
    if instance.keep_alive == 0 and instance.requests_served == 0 and instance.loaded_at:
        return max(instance.expires_at, instance.loaded_at + FIRST_REQUEST_GRACE)
    return instance.expires_at


def runtime_host_cleanup(*, host: str, reason: str) -> dict:
    """Forget the instances of a host whose supervisor ended (or restarts), killing their runners.

    Runners exit by themselves when their supervisor dies; one still alive (it had not
    noticed yet) is killed, so no memory stays held by a process nothing owns. The
    runtime operations a dead process of this host was running end interrupted.
    """
    instances = list(RuntimeInstance.objects.select_related("model").filter(host=host))
    killed = 0
    for instance in instances:
        if instance.pid and instance.pid != os.getpid() and is_runner(instance.pid):
            kill_process(instance.pid)
            killed += 1
    # The rows go with their events: no reader sees one without the other.
    with transaction.atomic():
        for instance in instances:
            if instance.state in LIVE_RUNTIME_STATES:
                event_record(
                    kind=EventKind.UNLOADED,
                    message=f"{instance.model.key} unloaded from {host} ({reason}).",
                    model=instance.model,
                    host=host,
                )
        removed = RuntimeInstance.objects.filter(pk__in=[i.pk for i in instances]).delete()[0]
    stale_pids = set(
        Operation.objects.filter(
            state=OperationState.RUNNING, kind__in=RUNTIME_KINDS, worker_host=host
        )
        .exclude(worker_pid=os.getpid())
        .values_list("worker_pid", flat=True)
    )
    interrupted = operations_interrupt_owned(
        host=host,
        pids=stale_pids,
        kinds=RUNTIME_KINDS,
        reason=f"Interrupted: {reason}; load the model again.",
        resumable=False,
    )
    if removed:
        runtime_publish()
    return {"instances": removed, "runners_killed": killed, "interrupted": interrupted}


def runtime_supervisor_ended(pids, reason: str) -> dict | None:
    """`manage.py run`'s hook when a process of its runtime child ended.

    `run` calls it for every process of the child's tree that ends, runners too: a runner
    that an unload, an eviction or an expiry stopped is not a death, and one that died on
    its own is the living supervisor's to notice. Only when a supervisor is among the
    ended (its heartbeat names it; a clean stop forgets it after cleaning up itself) are
    its instances and operations orphans: they are cleaned up and its heartbeat forgotten.
    Else return None and touch nothing.
    """
    _between_units_of_work()
    host = host_name()
    supervisors = list(
        ProcessHeartbeat.objects.filter(
            role=ProcessRole.RUNTIME, host=host, pid__in=list(pids)
        ).values_list("pid", flat=True)
    )
    if not supervisors:
        return None
    cleaned = runtime_host_cleanup(host=host, reason=reason)
    heartbeats_forget(host=host, pids=supervisors)
    return cleaned


def _supervisors(host: str) -> tuple[list[int], list[int]]:
    """Return the pids of this host's runtime supervisors with a heartbeat: alive, and dead."""
    pids = ProcessHeartbeat.objects.filter(role=ProcessRole.RUNTIME, host=host).values_list(
        "pid", flat=True
    )
    alive, dead = [], []
    for pid in pids:
        (alive if psutil.pid_exists(pid) else dead).append(pid)
    return alive, dead


def _between_units_of_work() -> None:
    if not connection.in_atomic_block:
        close_old_connections()
