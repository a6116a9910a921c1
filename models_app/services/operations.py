"""Operations: start, cancel, retry, finish, and the reaper for operations whose worker died.

Every state change is one call here that writes the row (guarded by the state it
expects, with the row count checked) and publishes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from .. import store
from ..errors import AlreadyRunning, InvalidState, ModelyardError
from ..models import (
    ACTIVE_STATES,
    EventKind,
    Installation,
    Model,
    Operation,
    OperationKind,
    OperationState,
)
from ..selectors import active_operation_blobs
from .events import event_record, operation_publish

logger = logging.getLogger(__name__)

RETRYABLE_STATES = (OperationState.FAILED, OperationState.CANCELLED, OperationState.INTERRUPTED)


@dataclass(frozen=True)
class StartResult:
    operation: Operation | None
    created: bool
    message: str


def _enqueue(operation_id: int) -> None:
    from django_q.tasks import async_task

    task_id = async_task(
        "models_app.tasks.run_operation",
        operation_id,
        task_name=f"operation-{operation_id}",
        timeout=settings.Q_TASK_TIMEOUT,
    )
    Operation.objects.filter(pk=operation_id).update(task_id=task_id or "", updated_at=Now())


def _conflict(active: Operation, kind: str) -> AlreadyRunning:
    return AlreadyRunning(
        f"{active.model.key} already has a {active.kind} operation #{active.id} "
        f"({active.state}); a {kind} cannot start until it ends.",
        details={"operation": active.id, "kind": active.kind, "state": active.state},
    )


def operation_start(*, model: Model, kind: str, user=None) -> StartResult:
    """Queue an operation on a model unless one is active; the same kind returns the running one.

    The conditional unique constraint is the guarantee; the lock only saves the
    losers of a race an IntegrityError.
    """
    try:
        with transaction.atomic():
            Model.objects.select_for_update().filter(pk=model.pk).first()
            active = (
                Operation.objects.select_related("model")
                .filter(model=model, state__in=ACTIVE_STATES)
                .first()
            )
            if active is not None:
                if active.kind == kind:
                    return StartResult(active, False, f"{kind.title()} already {active.state}.")
                raise _conflict(active, kind)
            if (
                kind == OperationKind.DOWNLOAD
                and Installation.objects.filter(model=model, location="primary").exists()
            ):
                return StartResult(None, False, f"{model.key} is already installed.")
            op = Operation.objects.create(
                model=model, kind=kind, created_by=user if _is_user(user) else None
            )
            transaction.on_commit(lambda: _enqueue(op.id))
    except IntegrityError:
        # Another request won the race between our read and our insert.
        active = (
            Operation.objects.select_related("model")
            .filter(model=model, state__in=ACTIVE_STATES)
            .first()
        )
        if active is None:
            raise
        if active.kind == kind:
            return StartResult(active, False, f"{kind.title()} already {active.state}.")
        raise _conflict(active, kind) from None
    op.model = model
    operation_publish(op)
    return StartResult(op, True, f"{kind.title()} of {model.key} queued.")


def download_start(*, model: Model, user=None) -> StartResult:
    """Queue a download of a model (see operation_start)."""
    return operation_start(model=model, kind=OperationKind.DOWNLOAD, user=user)


def operation_cancel(*, operation: Operation, user=None) -> Operation:
    """Cancel a queued operation now; ask a running one to stop (its worker stops within 1 s)."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = Operation.objects.filter(pk=operation.pk, state=OperationState.QUEUED).update(
            state=OperationState.CANCELLED, cancel_requested=True, finished_at=now, updated_at=Now()
        )
        if cancelled:
            op = Operation.objects.select_related("model").get(pk=operation.pk)
            event_record(
                kind=EventKind.CANCELLED,
                message=f"{op.kind.title()} of {op.model.key} cancelled before it started.",
                model=op.model,
                operation=op,
                actor=user,
            )
    if cancelled:
        operation_publish(op)
        return op
    Operation.objects.filter(pk=operation.pk, state=OperationState.RUNNING).update(
        cancel_requested=True, updated_at=Now()
    )
    op = Operation.objects.select_related("model").get(pk=operation.pk)
    if op.state not in ACTIVE_STATES:
        raise InvalidState(
            f"Operation #{op.id} has already ended ({op.state}); nothing to cancel.",
            details={"operation": op.id, "state": op.state},
        )
    operation_publish(op)
    return op


def operation_retry(*, operation: Operation, user=None) -> Operation:
    """Queue a failed, cancelled or interrupted operation again; it resumes from its partials."""
    try:
        with transaction.atomic():
            updated = Operation.objects.filter(pk=operation.pk, state__in=RETRYABLE_STATES).update(
                state=OperationState.QUEUED,
                cancel_requested=False,
                error_code="",
                error_message="",
                finished_at=None,
                speed=None,
                eta_seconds=None,
                updated_at=Now(),
            )
            if not updated:
                op = Operation.objects.get(pk=operation.pk)
                raise InvalidState(
                    f"Operation #{op.id} is {op.state}; only failed, cancelled or "
                    "interrupted operations can be retried.",
                    details={"operation": op.id, "state": op.state},
                )
            transaction.on_commit(lambda: _enqueue(operation.pk))
    except IntegrityError:
        active = (
            Operation.objects.select_related("model")
            .filter(model_id=operation.model_id, state__in=ACTIVE_STATES)
            .first()
        )
        raise _conflict(active, operation.kind) from None
    op = Operation.objects.select_related("model").get(pk=operation.pk)
    event_record(
        kind=EventKind.STARTED,
        message=f"{op.kind.title()} of {op.model.key} queued again (retry).",
        model=op.model,
        operation=op,
        actor=user,
        retry=True,
    )
    operation_publish(op)
    return op


def operation_claim(*, operation_id: int) -> Operation | None:
    """Move a queued operation to running for this worker; None if someone else has it."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Operation.objects.filter(pk=operation_id, state=OperationState.QUEUED).update(
            state=OperationState.RUNNING,
            started_at=now,
            heartbeat_at=now,
            bytes_done=0,
            attempts=F("attempts") + 1,
            updated_at=Now(),
        )
        if not claimed:
            return None
        op = Operation.objects.select_related("model").get(pk=operation_id)
        event_record(
            kind=EventKind.STARTED,
            message=f"{op.kind.title()} of {op.model.key} started.",
            model=op.model,
            operation=op,
        )
    operation_publish(op)
    return op


def operation_finish(
    *, operation: Operation, state: str, error: ModelyardError | None = None, **data
) -> bool:
    """End a running operation; False if it was no longer running (reaped or finished)."""
    values = {
        "state": state,
        "finished_at": timezone.now(),
        "eta_seconds": None,
        "updated_at": Now(),
    }
    if error is not None:
        values |= {"error_code": error.code, "error_message": error.message}
    if state == OperationState.SUCCEEDED:
        values["eta_seconds"] = 0
    kind = {
        OperationState.SUCCEEDED: EventKind.COMPLETED,
        OperationState.FAILED: EventKind.FAILED,
        OperationState.CANCELLED: EventKind.CANCELLED,
    }[state]
    verb = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}[state]
    # The end state and its event commit together: no reader sees one without the other.
    with transaction.atomic():
        ended = Operation.objects.filter(pk=operation.pk, state=OperationState.RUNNING).update(
            **values
        )
        if not ended:
            return False
        op = Operation.objects.select_related("model").get(pk=operation.pk)
        message = f"{op.kind.title()} of {op.model.key} {verb}"
        if error is not None:
            message += f": {error.message}"
        event_record(
            kind=kind,
            message=message + ("" if message.endswith(".") else "."),
            model=op.model,
            operation=op,
            error_code=error.code if error else "",
            **data,
        )
    operation_publish(op)
    return True


def operations_reap(*, now=None) -> list[int]:
    """Mark running operations whose heartbeat went stale as interrupted; return their ids."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.OPERATION_HEARTBEAT_STALE)
    reaped = []
    stale = Operation.objects.filter(state=OperationState.RUNNING, heartbeat_at__lt=cutoff)
    for op_id in stale.values_list("id", flat=True):
        # The state and its event commit together: no reader sees one without the other.
        with transaction.atomic():
            # Re-check the condition in the UPDATE: a heartbeat may have arrived since the read.
            if not Operation.objects.filter(
                pk=op_id, state=OperationState.RUNNING, heartbeat_at__lt=cutoff
            ).update(
                state=OperationState.INTERRUPTED,
                finished_at=now,
                speed=None,
                eta_seconds=None,
                updated_at=Now(),
                error_message=(
                    "The worker stopped sending heartbeats (it died or lost the database). "
                    "Retry resumes from the partial files."
                ),
            ):
                continue
            op = Operation.objects.select_related("model").get(pk=op_id)
            event_record(
                kind=EventKind.INTERRUPTED,
                message=f"{op.kind.title()} of {op.model.key} interrupted: no heartbeat since "
                f"{op.heartbeat_at:%H:%M:%S}.",
                model=op.model,
                operation=op,
            )
        operation_publish(op)
        reaped.append(op_id)
    return reaped


def partials_cleanup(*, now=None) -> list[str]:
    """Remove partial files older than PARTIAL_MAX_AGE that no active operation will resume."""
    now = now or timezone.now()
    keep = active_operation_blobs()
    removed = []
    cutoff = now - timedelta(seconds=settings.PARTIAL_MAX_AGE)
    for path in store.stale_partials(settings.MODELS_HUB_DIR, older_than=cutoff, keep=keep):
        path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(settings.MODELS_HUB_DIR)))
    if removed:
        logger.info("removed %d stale partial files", len(removed))
    return removed


def _is_user(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)
