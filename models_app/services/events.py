"""Audit events and live updates: the one place that records and publishes what happened."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from ..models import Event, Model, Operation

logger = logging.getLogger(__name__)

OPERATIONS_GROUP = "modelyard.operations"


def event_record(*, kind: str, message: str, model=None, operation=None, actor=None, **data):
    """Write one audit Event."""
    return Event.objects.create(
        kind=kind,
        message=message,
        model=model,
        operation=operation,
        actor=actor if actor is not None and actor.is_authenticated else None,
        error_code=data.pop("error_code", ""),
        data=data,
    )


def operation_payload(op: Operation) -> dict:
    """Return the fields every client sees for an operation (API, websocket, page)."""
    return {
        "id": op.id,
        # Loads the model when the caller did not select it. None: a store-wide operation.
        "model": op.model.key if op.model_id else None,
        "model_id": op.model_id,
        "kind": op.kind,
        "state": op.state,
        "bytes_done": op.bytes_done,
        "bytes_total": op.bytes_total,
        "speed": op.speed,
        "eta_seconds": op.eta_seconds,
        "error_code": op.error_code,
        "error_message": op.error_message,
        "cancel_requested": op.cancel_requested,
        "heartbeat_at": op.heartbeat_at.isoformat() if op.heartbeat_at else None,
        "started_at": op.started_at.isoformat() if op.started_at else None,
        "finished_at": op.finished_at.isoformat() if op.finished_at else None,
    }


def operation_event(op: Operation) -> dict:
    """Return the channel-layer event for an operation.

    The client's message travels ready-encoded: the layer copies (in memory) or packs
    (Redis) each event once per client, and a flat event with one string is the cheap
    kind; every consumer sends the same text. Beside it, what consumers decide on: the
    id, the state, the model's key (its state follows an end state), and `updated_at`, to
    drop a state older than one already sent (the relay and a direct publish can both
    deliver one change, out of order).
    """
    message = {"type": "operation", "operation": operation_payload(op)}
    return {
        "type": "operation.update",
        "id": op.id,
        "state": op.state,
        "model": message["operation"]["model"],
        "updated_at": op.updated_at.isoformat() if op.updated_at else None,
        "text": json.dumps(message),
    }


def model_payload(model: Model) -> dict:
    """Return a model's install and active state; `model` comes from `model_queryset()`."""
    installation = getattr(model, "installation", None)
    return {
        "key": model.key,
        "type": model.type,
        "installed": installation is not None,
        "is_active": bool(getattr(model, "is_active", False)),
        "size_on_disk": installation.size_on_disk if installation else 0,
    }


def model_events(*, model_ids) -> list[dict]:
    """Return one `model.update` event per model id that still exists."""
    from ..selectors import model_queryset

    models = model_queryset().filter(pk__in=set(model_ids)).order_by("key")
    return [{"type": "model.update", "model": model_payload(m)} for m in models]


CACHE_FIELDS = (
    "total_bytes", "managed_bytes", "unmanaged_bytes", "partial_bytes", "free_disk_bytes",
    "quota_bytes",
)  # fmt: skip


def cache_payload() -> dict:
    """Return the cache figures the live page shows (a subset of `cache_summary`)."""
    from ..selectors import cache_summary

    summary = cache_summary()
    return {field: summary[field] for field in CACHE_FIELDS}


def cache_event() -> dict:
    return {"type": "cache.update", "cache": cache_payload()}


def _group_send(build: Callable[[], list[dict]]) -> None:
    """Build the events and send them to the live group, if anyone can hear them here.

    An in-memory layer reaches only this process's consumers. In a worker or a command
    none is joined (each web process's relay reads the change from the database), so
    neither the payloads (queries) nor the send (a thread and an event loop per call)
    are paid for nothing.
    """
    layer = get_channel_layer()
    if layer is None or (
        isinstance(layer, InMemoryChannelLayer) and not layer.groups.get(OPERATIONS_GROUP)
    ):
        return
    events = build()
    if not events:
        return

    async def send_all():
        for event in events:
            await layer.group_send(OPERATIONS_GROUP, event)

    async_to_sync(send_all)()


def operation_publish(op: Operation) -> None:
    """Publish an operation's state to the channel layer; a layer outage never fails the work."""
    try:
        _group_send(lambda: [operation_event(op)])
    except Exception:
        logger.warning("could not publish operation %s", op.id, exc_info=True)


def model_publish(*, model_ids) -> None:
    """Publish the install and active state of models (after a switch, an install, a delete)."""
    try:
        _group_send(lambda: model_events(model_ids=model_ids))
    except Exception:
        logger.warning("could not publish models %s", list(model_ids), exc_info=True)


def store_change_publish(*, model_ids) -> None:
    """Publish the state of these models and the cache figures (after a reconcile)."""
    try:
        _group_send(lambda: [*model_events(model_ids=model_ids), cache_event()])
    except Exception:
        logger.warning("could not publish the store change of %s", list(model_ids), exc_info=True)


def runtime_event() -> dict:
    """Return the channel-layer event for the whole runtime picture (hosts and instances).

    Like an operation's, the client's message travels ready-encoded in `text`.
    """
    from ..selectors import runtime_payload

    runtime = runtime_payload()
    return {
        "type": "runtime.update",
        "runtime": runtime,
        "text": json.dumps({"type": "runtime", "runtime": runtime}),
    }


def runtime_publish() -> None:
    """Publish what the runtime has loaded where (after any instance changed)."""
    try:
        _group_send(lambda: [runtime_event()])
    except Exception:
        logger.warning("could not publish the runtime", exc_info=True)


def operation_outcome_publish(op: Operation) -> None:
    """Publish what an ended operation changed: its model's state and the cache figures."""
    store_change_publish(model_ids=[op.model_id] if op.model_id else [])
