"""The live-updates websocket (`/ws/live/`, docs/live-protocol.md): superusers only, send-only."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from . import live
from .models import TERMINAL_STATES
from .services.events import OPERATIONS_GROUP

logger = logging.getLogger(__name__)

# At most 4 operation messages a second per operation: never more than MAX_IN_WINDOW in
# WINDOW seconds, a little over one so that network jitter never shows a client five in a
# second, and at least MIN_INTERVAL apart so that a burst is coalesced to its newest state.
# The worker writes progress every 0.3 s (OPERATION_PROGRESS_INTERVAL), under this limit,
# so a steady download's updates are never held.
MAX_IN_WINDOW = 4
WINDOW = 1.05
MIN_INTERVAL = 0.2
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNAVAILABLE = 1011
LAYER_EVENTS = ("operation.update", "model.update", "cache.update", "runtime.update")


def _stamp(value: str | None) -> datetime | None:
    """Parse an event's `updated_at`, to the millisecond (SQLite's Now() keeps no more)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


@dataclass
class _OperationStream:
    """What one connection has sent of one operation, and what it holds back."""

    sent: str | None = None
    sent_stamp: datetime | None = None
    sent_times: deque = field(default_factory=lambda: deque(maxlen=MAX_IN_WINDOW))
    held: str | None = None
    held_stamp: datetime | None = None
    timer: asyncio.Task | None = None

    def latest(self) -> tuple[str | None, datetime | None]:
        if self.held is not None:
            return self.held, self.held_stamp
        return self.sent, self.sent_stamp

    def next_send_at(self) -> float:
        """Return the loop time from which one more message keeps within the limits."""
        if not self.sent_times:
            return float("-inf")
        due = self.sent_times[-1] + MIN_INTERVAL
        if len(self.sent_times) == MAX_IN_WINDOW:
            due = max(due, self.sent_times[0] + WINDOW)
        return due


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Send the snapshot, then operation, model, cache and runtime updates.

    Operation updates are coalesced per operation, runtime updates as one stream of their
    own, under the same limits: an update that would break them is held and sent as soon
    as they allow (a newer one replaces it); an end state goes at once and drops what was
    held. An update equal to, or older than, what was sent or held is dropped: the relay
    and a direct publish in this process can both deliver one change.
    """

    joined = False
    relayed = False

    async def connect(self):
        user = self.scope.get("user")
        # Accept, then close: a refusal before the handshake reaches the browser as a bare
        # failure, without the close code that tells the page to log in again.
        if user is None or not user.is_authenticated:
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not user.is_superuser:
            await self.accept()
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.streams: dict[int, _OperationStream] = {}
        # The runtime picture: every request served changes it (in flight, counts), so it
        # is limited like one operation's progress.
        self.runtime_stream = _OperationStream()
        self.models: dict[str, dict] = {}
        self.cache: dict | None = None
        self.send_lock = asyncio.Lock()
        await self.accept()
        try:
            # Join before reading the snapshot: a change made in between arrives twice at
            # worst, and the second copy is dropped as equal or older.
            await self.channel_layer.group_add(OPERATIONS_GROUP, self.channel_name)
            self.joined = True
            await live.relay_join()
            self.relayed = True
            message, events = await database_sync_to_async(live.live_snapshot)()
        except Exception:
            # The database or the layer is away: say so (1011) and let the page retry,
            # rather than leave a member in the group or a client counted by the relay.
            logger.warning("live connection could not start", exc_info=True)
            await self._leave()
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        for event in events:
            self.streams[event["id"]] = _OperationStream(
                sent=event["text"], sent_stamp=_stamp(event["updated_at"])
            )
        self.cache = message["cache"]
        self.runtime_stream.sent = json.dumps({"type": "runtime", "runtime": message["runtime"]})
        await self.send_json(message)

    async def disconnect(self, code):
        await self._leave()

    async def _leave(self) -> None:
        streams = list(getattr(self, "streams", {}).values())
        if hasattr(self, "runtime_stream"):
            streams.append(self.runtime_stream)
        for stream in streams:
            if stream.timer is not None:
                stream.timer.cancel()
        if self.relayed:
            self.relayed = False
            await live.relay_leave()
        if self.joined:
            self.joined = False
            try:
                await self.channel_layer.group_discard(OPERATIONS_GROUP, self.channel_name)
            except Exception:  # the layer is away; its group membership expires
                logger.warning("could not leave the live group", exc_info=True)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            content = json.loads(text_data or "")
        except ValueError:
            return  # the client has nothing to say but ping
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def dispatch(self, message):
        if message["type"] in LAYER_EVENTS:
            # These carry their payload and touch no database: skip Channels' connection
            # cleanup, a hop to the one shared sync thread for every message to every client.
            await getattr(self, get_handler_name(message))(message)
            return
        await super().dispatch(message)

    # --- channel-layer events (services/events.py) ---------------------------------------

    async def operation_update(self, event):
        if not self.joined:
            return
        text, stamp = event["text"], _stamp(event.get("updated_at"))
        stream = self.streams.setdefault(event["id"], _OperationStream())
        latest, latest_stamp = stream.latest()
        if text == latest or text == stream.sent:
            return
        if stamp is not None and latest_stamp is not None and stamp < latest_stamp:
            return  # an older state than one already sent or held
        final = event["state"] in TERMINAL_STATES
        if final:
            # The model's state and the cache figures follow an end state even when a
            # store scan just before it sent the same ones (the relay can read the new
            # installation before the end state): the page refreshes its card and header
            # on them.
            self.cache = None
            self.models.pop(event.get("model"), None)
        await self._offer(stream, text, stamp, final=final)

    async def runtime_update(self, event):
        if not self.joined:
            return
        text = event.get("text") or json.dumps({"type": "runtime", "runtime": event["runtime"]})
        stream = self.runtime_stream
        if text == stream.latest()[0] or text == stream.sent:
            return
        await self._offer(stream, text, None, final=False)

    async def model_update(self, event):
        model = event["model"]
        if self.joined and self.models.get(model["key"]) != model:
            self.models[model["key"]] = model
            await self.send_json({"type": "model", "model": model})

    async def cache_update(self, event):
        if self.joined and _cache_changed(self.cache, event["cache"]):
            self.cache = event["cache"]
            await self.send_json({"type": "cache", "cache": self.cache})

    # --- coalescing ---------------------------------------------------------------------

    async def _offer(self, stream: _OperationStream, text: str, stamp, *, final: bool) -> None:
        """Send now if the stream's limits allow (or it is final), else hold it for later."""
        loop = asyncio.get_running_loop()
        async with self.send_lock:
            due_at = stream.next_send_at()
            if loop.time() >= due_at or final:
                self._drop_held(stream)
                await self._send_operation(stream, text, stamp)
                return
            stream.held, stream.held_stamp = text, stamp
            if stream.timer is None:
                stream.timer = asyncio.create_task(self._send_held(stream, due_at))

    async def _send_operation(self, stream: _OperationStream, text: str, stamp) -> None:
        """Send one operation message; the caller holds `send_lock`.

        The limits count from the decision to send, not from when the send returned:
        updates that arrive on a steady beat would otherwise each be held a little longer
        than the one before, and fall ever further behind.
        """
        stream.sent, stream.sent_stamp = text, stamp
        stream.sent_times.append(asyncio.get_running_loop().time())
        await self.send(text_data=text)

    def _drop_held(self, stream: _OperationStream) -> None:
        # The timer waits on the sleep or on the lock we hold: cancelling is safe.
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        stream.held = stream.held_stamp = None

    async def _send_held(self, stream: _OperationStream, due_at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, due_at - loop.time()))
        async with self.send_lock:
            stream.timer = None
            if stream.held is not None and self.joined:
                text, stamp = stream.held, stream.held_stamp
                stream.held = stream.held_stamp = None
                await self._send_operation(stream, text, stamp)


# Free disk moves with every write on the machine: the same scan published twice (by the
# reconcile and by the relay that sees its row) reads it a few kilobytes apart. The page
# shows it to a tenth of a unit, so a smaller move alone is not a change worth a message.
FREE_DISK_JITTER = 1 << 20


def _cache_changed(sent: dict | None, new: dict) -> bool:
    """Return True if the cache figures differ from those sent beyond free-disk jitter."""
    if sent is None:
        return True
    others = {k: v for k, v in new.items() if k != "free_disk_bytes"}
    if others != {k: v for k, v in sent.items() if k != "free_disk_bytes"}:
        return True
    return abs((new.get("free_disk_bytes") or 0) - (sent.get("free_disk_bytes") or 0)) >= (
        FREE_DISK_JITTER
    )
