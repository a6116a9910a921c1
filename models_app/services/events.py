"""Audit events and live updates: the one place that records and publishes what happened."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from ..models import Event, Operation

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
        "model": op.model.key if "model" in op._state.fields_cache else None,
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


def operation_publish(op: Operation) -> None:
    """Publish an operation's state to the channel layer; a layer outage never fails the work."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            OPERATIONS_GROUP, {"type": "operation.update", "operation": operation_payload(op)}
        )
    except Exception:
        logger.warning("could not publish operation %s", op.id, exc_info=True)
