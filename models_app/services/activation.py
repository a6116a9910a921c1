"""The active model per type."""

from __future__ import annotations

from django.db import transaction

from ..errors import Incompatible, NotInstalled
from ..models import ActiveModel, EventKind, Installation, Model, OperationKind
from ..phrasing import type_label, with_article
from .events import event_record, model_publish
from .operations import operation_exclusion_check


def model_activate(*, model: Model, type: str | None = None, user=None) -> ActiveModel:
    """Make an installed model the active one for its type and record the switch."""
    if type is not None and type != model.type:
        raise Incompatible(
            f"{model.key} is {with_article(type_label(model.type))} model and cannot be the "
            f"active {type_label(type)} model.",
            details={"model": model.key, "model_type": model.type, "requested_type": type},
        )
    with transaction.atomic():
        # Lock the entry so that a concurrent delete cannot remove it under the switch.
        model = Model.objects.select_for_update().get(pk=model.pk)
        # A queued or running delete would clear the slot right after: refuse, naming it.
        operation_exclusion_check(
            model=model,
            kind="activate",
            doing="activating it",
            conflicting={OperationKind.DELETE},
        )
        if not Installation.objects.filter(model=model).exists():
            raise NotInstalled(
                f"{model.key} is not installed; download it before activating it.",
                details={"model": model.key},
            )
        previous = (
            ActiveModel.objects.select_for_update().filter(type=model.type).select_related("model")
        ).first()
        if previous is not None and previous.model_id == model.id:
            return previous
        active, _ = ActiveModel.objects.update_or_create(
            type=model.type,
            defaults={"model": model, "activated_by": user if _is_user(user) else None},
        )
        event_record(
            kind=EventKind.SWITCHED,
            message=f"Active {type_label(model.type)} model is now {model.key}"
            + (f" (was {previous.model.key})." if previous else "."),
            model=model,
            actor=user,
            type=model.type,
            previous=previous.model.key if previous else None,
        )
        switched = [model.id] + ([previous.model_id] if previous is not None else [])
        # After the commit, so that a client reading the state back sees the switch.
        transaction.on_commit(lambda: model_publish(model_ids=switched))
    return active


def _is_user(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)
