"""Live updates without Redis: the snapshot a client starts from, and the relay.

With channels-redis every process's publish reaches every daphne process, and the
relay stays off. With the in-memory layer (the default: no Redis, the worker in its
own process) a publish reaches only the process that made it, so each daphne process
runs one relay task while it has clients: it polls the Operation rows changed since
its last look (`updated_at`), and the runtime's instances, and sends what changed to its
own consumers.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import connections
from django.db.models import Max

from .models import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    ActiveModel,
    Installation,
    Operation,
    ProcessHeartbeat,
    ProcessRole,
    RuntimeInstance,
    StoreScan,
)
from .selectors import busy_model_ids, runtime_payload
from .services.events import (
    OPERATIONS_GROUP,
    cache_event,
    cache_payload,
    model_events,
    operation_event,
    operation_payload,
    runtime_event,
)

logger = logging.getLogger(__name__)

# The relay's share of the publish-to-client delay: half of this on average.
RELAY_INTERVAL = 0.1
# Rows are re-read this far behind the newest change seen, so that a write committed a
# little after a later one (statement time versus commit time) is not missed; what was
# already sent is recognised and skipped.
RELAY_LOOKBACK = timedelta(seconds=2)


def live_snapshot() -> tuple[dict, list[dict]]:
    """Return the first message of a connection and the operation events it stands for."""
    ops = Operation.objects.select_related("model").filter(state__in=ACTIVE_STATES)
    ops = list(ops.order_by("created_at", "id"))
    message = {
        "type": "snapshot",
        "operations": [operation_payload(op) for op in ops],
        "cache": cache_payload(),
        "runtime": runtime_payload(),
    }
    return message, [operation_event(op) for op in ops]


def relay_needed(layer) -> bool:
    """Return True if publishes stay in the process that made them (the in-memory layer)."""
    return isinstance(layer, InMemoryChannelLayer)


def _latest_scan_id() -> int | None:
    return StoreScan.objects.order_by("-scanned_at", "-id").values_list("id", flat=True).first()


def _active_models() -> dict[str, int]:
    return dict(ActiveModel.objects.values_list("type", "model_id"))


def _installed() -> dict[int, int]:
    return dict(Installation.objects.values_list("model_id", "size_on_disk"))


def _changed_keys(before: dict, after: dict) -> set:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


# What a client sees of an instance, besides `updated_at`: the runtime's services write
# their rows with QuerySet.update(), which leaves an auto_now field alone, so a change
# (ready, in flight, RSS measured) is told by its columns as well.
RUNTIME_COLUMNS = (
    "id", "updated_at", "state", "pid", "port", "rss", "memory_estimate", "n_ctx", "n_threads",
    "keep_alive", "expires_at", "loaded_at", "requests_served", "in_flight", "error_code",
)  # fmt: skip


def _runtime_rows() -> tuple:
    """Return every runtime instance's visible columns and the runtime supervisors.

    All of them, not those changed since a time: a row that disappeared (unloaded) must
    be noticed too, and the table holds a few rows (what is loaded, what failed).
    """
    instances = tuple(RuntimeInstance.objects.order_by("id").values_list(*RUNTIME_COLUMNS))
    hosts = tuple(
        ProcessHeartbeat.objects.filter(role=ProcessRole.RUNTIME)
        .order_by("host", "pid")
        .values_list("host", "pid")
    )
    return instances, hosts


class OperationRelay:
    """Poll changed Operation rows and group_send them to this process's consumers.

    Each row state is sent once: `sent` remembers the last event per operation.
    When an operation reaches an end state, its model's state and the cache figures
    follow; the cache figures also follow every new store scan, with the state of every
    model whose installation changed; a switch of the active model (made by a request
    to another process) sends both models. A change of any runtime instance (or one gone,
    or a runtime supervisor come or gone) sends the whole runtime picture.
    """

    def __init__(self, layer, *, loop, interval: float = RELAY_INTERVAL):
        self.layer = layer
        self.loop = loop
        self.interval = interval
        self.clients = 0
        self.task: asyncio.Task | None = None
        self.ready: asyncio.Future | None = None
        self.last_seen = None
        self.sent: dict[int, dict] = {}
        self.scan_id = None
        self.active: dict[str, int] = {}
        self.installed: dict[int, int] = {}
        self.runtime: tuple | None = None
        # One thread of its own: polls neither queue behind nor hold up the threads that
        # serve requests and consumers, and stopping closes exactly its connection.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-relay")

    def _in_thread(self, func):
        return database_sync_to_async(func, thread_sensitive=False, executor=self.executor)()

    def stop(self) -> None:
        """Cancel the polling task and close the relay thread's database connection."""
        if self.task is not None:
            self.task.cancel()
        self.executor.submit(connections.close_all)
        self.executor.shutdown(wait=False)

    def _changed(self):
        qs = Operation.objects.select_related("model").order_by("updated_at", "id")
        if self.last_seen is not None:
            qs = qs.filter(updated_at__gte=self.last_seen - RELAY_LOOKBACK)
        return list(qs)

    def prime(self) -> None:
        """Remember the current state as sent: clients get it from their snapshot."""
        self.last_seen = Operation.objects.aggregate(last=Max("updated_at"))["last"]
        for op in self._changed():
            self.sent[op.id] = operation_event(op)
        self.scan_id = _latest_scan_id()
        self.active = _active_models()
        self.installed = _installed()
        self.runtime = _runtime_rows()

    def poll(self) -> list[dict]:
        """Return the events for what changed since the last poll."""
        events, ended, in_window = [], [], {}
        for op in self._changed():
            event = operation_event(op)
            previous = self.sent.get(op.id)
            in_window[op.id] = event
            if self.last_seen is None or op.updated_at > self.last_seen:
                self.last_seen = op.updated_at
            if previous is not None and previous["text"] == event["text"]:
                continue
            events.append(event)
            ended_now = op.state in TERMINAL_STATES and (previous or {}).get("state") != op.state
            if ended_now:
                ended.append(op.model_id)
        # A row that left the window is never read again unless it changes.
        self.sent = in_window
        changed_models = set(ended) - {None}  # a store-wide operation has no model
        active = _active_models()
        if active != self.active:
            changed_models |= {
                model_id
                for type_ in _changed_keys(self.active, active)
                for model_id in (self.active.get(type_), active.get(type_))
                if model_id is not None
            }
            self.active = active
        scan_id = _latest_scan_id()
        rescanned = scan_id != self.scan_id
        if rescanned:
            # Reconcile writes a scan after every change to installed state.
            self.scan_id = scan_id
            installed = _installed()
            # A model whose operation runs gets its state after the operation's end state.
            changed = _changed_keys(self.installed, installed)
            changed_models |= changed - busy_model_ids(changed)
            self.installed = installed
        if changed_models:
            events.extend(model_events(model_ids=changed_models))
        if ended or rescanned:
            events.append(cache_event())
        runtime = _runtime_rows()
        if runtime != self.runtime:
            self.runtime = runtime
            events.append(runtime_event())
        return events

    async def run(self) -> None:
        try:
            await self._in_thread(self.prime)
        except Exception as exc:
            self.ready.set_exception(exc)
            raise
        self.ready.set_result(None)
        loop = asyncio.get_running_loop()
        tick = loop.time()
        while True:
            # On a fixed beat, so a slow poll does not stretch the interval.
            tick = max(tick + self.interval, loop.time())
            await asyncio.sleep(tick - loop.time())
            try:
                events = await self._in_thread(self.poll)
                for event in events:
                    await self.layer.group_send(OPERATIONS_GROUP, event)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be briefly away; the next poll catches up (the
                # window is behind the last change seen, not behind the clock).
                logger.warning("live relay poll failed", exc_info=True)


_relay: OperationRelay | None = None


async def relay_join() -> None:
    """Count a client in; the first one starts this process's relay and waits for it to prime.

    Priming before the client reads its snapshot means no change falls between the two:
    whatever changes after the prime is sent, and the snapshot already holds the rest.
    """
    global _relay
    layer = get_channel_layer()
    if not relay_needed(layer):
        return
    loop = asyncio.get_running_loop()
    if (
        _relay is None
        or _relay.layer is not layer
        or _relay.loop is not loop  # left over from a loop that has ended (tests)
        or _relay.task.done()
    ):
        _relay = OperationRelay(layer, loop=loop)
        _relay.ready = loop.create_future()
        _relay.task = loop.create_task(_relay.run(), name="modelyard-live-relay")
    _relay.clients += 1
    relay = _relay
    try:
        await asyncio.shield(relay.ready)
    except Exception:
        await relay_leave()
        raise


async def relay_leave() -> None:
    """Count a client out; the last one stops the relay."""
    global _relay
    relay = _relay
    if relay is None or relay.clients == 0:
        return
    relay.clients -= 1
    if relay.clients == 0:
        relay.stop()
        _relay = None
