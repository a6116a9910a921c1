"""Installed models: pin one against prune, record that one was used."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import F, Q
from django.utils import timezone

from ..errors import NotInstalled
from ..models import Installation, Model

# Use is recorded at most this often per model: a runtime serving many requests a second
# must not write a row for each of them.
TOUCH_EVERY = timedelta(minutes=1)


def installation_pin(*, model: Model, pinned: bool, user=None) -> Installation:
    """Pin (or unpin) an installed model so that prune never removes it."""
    installation = Installation.objects.filter(model=model).first()
    if installation is None:
        raise NotInstalled(
            f"{model.key} is not installed; only installed models can be pinned.",
            details={"model": model.key},
        )
    Installation.objects.filter(pk=installation.pk).update(pinned=pinned)
    installation.pinned = pinned
    return installation


def installation_touch(*, model: Model, now=None) -> bool:
    """Record that an installed model was used; return True if this call wrote the row.

    Writes are coalesced to one per model per TOUCH_EVERY, by the database and across
    processes: the UPDATE only matches a row last used before the window, so of many
    callers in one minute only the first writes. `use_count` therefore counts the
    minutes in which the model was used, not the requests.
    """
    now = now or timezone.now()
    return bool(
        Installation.objects.filter(model=model)
        .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - TOUCH_EVERY))
        .update(last_used_at=now, use_count=F("use_count") + 1)
    )
