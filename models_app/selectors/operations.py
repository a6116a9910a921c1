"""Operation reads: lists, one operation, which models are busy, each model's current one."""

from __future__ import annotations

from django.db.models import Case, F, IntegerField, QuerySet, Value, When, Window
from django.db.models.functions import RowNumber

from ..errors import NotFound
from ..models import ACTIVE_STATES, Operation, OperationKind


def operation_list(
    *, state: str | None = None, model: str | None = None, kind: str | None = None
) -> QuerySet[Operation]:
    """Return operations newest first; state "active" means queued or running."""
    qs = Operation.objects.select_related("model").order_by("-created_at", "-id")
    if state == "active":
        qs = qs.filter(state__in=ACTIVE_STATES)
    elif state:
        qs = qs.filter(state=state)
    if model:
        qs = qs.filter(model__key=model)
    if kind:
        qs = qs.filter(kind=kind)
    return qs


def operation_get(*, operation_id: int) -> Operation:
    try:
        return Operation.objects.select_related("model").get(pk=operation_id)
    except Operation.DoesNotExist:
        raise NotFound(
            f"No operation #{operation_id}.", details={"operation": operation_id}
        ) from None


def store_operation_current() -> Operation | None:
    """Return the queued or running store-wide operation (a prune), if there is one."""
    return (
        Operation.objects.filter(model__isnull=True, state__in=ACTIVE_STATES)
        .order_by("-created_at", "-id")
        .first()
    )


def busy_model_ids(model_ids) -> set[int]:
    """Return which of these models have a queued or running operation."""
    return set(
        Operation.objects.filter(model_id__in=set(model_ids), state__in=ACTIVE_STATES)
        .values_list("model_id", flat=True)
        .distinct()
    )


def active_operation_blobs() -> set[str]:
    """Return the blob ids that queued or running operations will write."""
    return _plan_blobs(Operation.objects.filter(state__in=ACTIVE_STATES))


def download_blobs(*, model) -> set[str]:
    """Return the blob ids this model's downloads planned (what their partial files are named).

    Blobs that an active operation of another model plans are left out: their partial
    files are that download's to resume.
    """
    mine = Operation.objects.filter(model=model, kind=OperationKind.DOWNLOAD)
    others = Operation.objects.filter(state__in=ACTIVE_STATES).exclude(model=model)
    return _plan_blobs(mine) - _plan_blobs(others)


def _plan_blobs(qs: QuerySet[Operation]) -> set[str]:
    return {
        f["blob_id"]
        for plan in qs.values_list("plan", flat=True)
        for f in plan or []
        if isinstance(f, dict) and f.get("blob_id")
    }


def current_operations_by_model(*, model_ids: list[int]) -> dict[int, Operation]:
    """Return each model's active operation, else its latest one, by model id, in one query."""
    if not model_ids:
        return {}
    active_first = Case(
        When(state__in=ACTIVE_STATES, then=Value(0)), default=Value(1), output_field=IntegerField()
    )
    ranked = (
        Operation.objects.filter(model_id__in=model_ids)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("model_id")],
                order_by=[active_first.asc(), F("created_at").desc(), F("id").desc()],
            )
        )
        .filter(rank=1)
    )
    return {op.model_id: op for op in ranked}
