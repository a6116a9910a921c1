"""Audit events and live updates: the one place that records and publishes what happened."""

from __future__ import annotations

import logging

from ..models import Event

logger = logging.getLogger(__name__)


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
