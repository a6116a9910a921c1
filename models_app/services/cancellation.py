"""Cancel an operation; for a download, on request, discard its partial files too.

A queued operation is cancelled at once; a running one is asked to stop, and its worker
stops within a second. By default a download's partial files stay for a retry to resume.
With `discard_partial` they go: at once when the download was queued or had already ended
unsuccessfully, by its worker as it stops when it runs (services/downloads.py). Either way
through the Store adapter, and the repo folder is reconciled afterwards.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from .. import selectors
from ..errors import InvalidInput, InvalidState
from ..models import ACTIVE_STATES, EventKind, Model, Operation, OperationKind, OperationState
from ..phrasing import with_article
from ..store import get_store, repo_folder
from .events import event_record, operation_publish
from .operations import RETRYABLE_STATES, operation_conflict
from .reconcile import store_reconcile

logger = logging.getLogger(__name__)


def operation_cancel(
    *, operation: Operation, user=None, discard_partial: bool = False
) -> Operation:
    """Cancel a queued operation now; ask a running one to stop (its worker stops within 1 s).

    With `discard_partial` (downloads only, else InvalidInput) the download's partial files
    are removed as well; on a download that already ended failed, cancelled or interrupted
    that is all the call does. An ended operation is InvalidState otherwise.
    """
    if discard_partial and operation.kind != OperationKind.DOWNLOAD:
        raise InvalidInput(
            f"Operation #{operation.pk} is {with_article(operation.kind)}; only a download "
            "has partial files to discard.",
            details={"operation": operation.pk, "kind": operation.kind},
        )
    discarded = None
    with transaction.atomic():
        if discard_partial:
            _lock_model(operation)  # no new download of the model starts while files go
        cancelled = Operation.objects.filter(pk=operation.pk, state=OperationState.QUEUED).update(
            state=OperationState.CANCELLED,
            cancel_requested=True,
            discard_partial=discard_partial,
            finished_at=timezone.now(),
            updated_at=Now(),
        )
        if cancelled:
            op = Operation.objects.select_related("model").get(pk=operation.pk)
            if discard_partial:
                # Queued: no worker writes them. The row lock keeps a claim from starting one.
                discarded = download_partials_discard(operation=op)
                Operation.objects.filter(pk=op.pk).update(result=discarded)
                op.result = discarded
            event_record(
                kind=EventKind.CANCELLED,
                message=f"{op.kind.title()} of {op.target} cancelled before it started"
                f"{_discarded_text(discarded)}.",
                model=op.model,
                operation=op,
                actor=user,
                **(discarded or {}),
            )
    if cancelled:
        _reconcile_after(op, discarded)
        operation_publish(op)
        return op
    asked = {"cancel_requested": True, "updated_at": Now()}
    if discard_partial:
        asked["discard_partial"] = True  # a later plain cancel never withdraws it
    Operation.objects.filter(pk=operation.pk, state=OperationState.RUNNING).update(**asked)
    op = Operation.objects.select_related("model").get(pk=operation.pk)
    if op.state in ACTIVE_STATES:
        operation_publish(op)
        return op
    if discard_partial and op.state in RETRYABLE_STATES:
        return _discard_ended(op, user=user)
    hint = ""
    if op.kind == OperationKind.DOWNLOAD and op.state in RETRYABLE_STATES:
        hint = " Cancel with discard_partial to remove its partial files."
    raise InvalidState(
        f"Operation #{op.id} has already ended ({op.state}); nothing to cancel.{hint}",
        details={"operation": op.id, "state": op.state},
    )


def _discard_ended(op: Operation, *, user=None) -> Operation:
    """Remove the partial files a failed, cancelled or interrupted download left behind."""
    with transaction.atomic():
        _lock_model(op)
        # Writing the row takes its lock (the write lock on SQLite): a retry of this
        # operation cannot queue it again, and so no worker resume it, while files go.
        if not Operation.objects.filter(pk=op.pk, state__in=RETRYABLE_STATES).update(
            discard_partial=True, updated_at=Now()
        ):
            op.refresh_from_db()
            raise InvalidState(
                f"Operation #{op.id} is {op.state} now; cancel it again.",
                details={"operation": op.id, "state": op.state},
            )
        active = (
            Operation.objects.select_related("model")
            .filter(model_id=op.model_id, state__in=ACTIVE_STATES)
            .first()
        )
        if active is not None:
            # Another download of the model resumes these very files; a delete removes them.
            raise operation_conflict(
                active, doing=f"discarding the partial files of download #{op.id}"
            )
        discarded = download_partials_discard(operation=op)
        result = {**(op.result or {}), **discarded}
        Operation.objects.filter(pk=op.pk).update(result=result)
        event_record(
            kind=EventKind.DELETED,
            message=f"Discarded the partial files of {op.kind} #{op.id} of {op.target}"
            f"{_discarded_text(discarded, lead=':')}.",
            model=op.model,
            operation=op,
            actor=user,
            **discarded,
        )
    _reconcile_after(op, discarded)
    op = Operation.objects.select_related("model").get(pk=op.pk)
    operation_publish(op)
    return op


def download_partials_discard(*, operation: Operation) -> dict:
    """Remove the partial files of a download's model (the blobs its downloads planned).

    Return the figures for the operation's result and event. Other models' partial files
    stay, and so do those an active download of another model plans. The caller makes
    sure no download of this model writes them meanwhile, and reconciles the repo folder.
    """
    model = operation.model
    names, freed = get_store().partials_discard(
        model.repo_id, selectors.download_blobs(model=model)
    )
    files = [name for name in names if name.endswith(".incomplete")]
    if names:
        logger.info("discarded %d partial files of %s (%d bytes)", len(files), model.key, freed)
    return {"partial_files_discarded": files, "partial_bytes_discarded": freed}


def _discarded_text(discarded: dict | None, *, lead: str = ";") -> str:
    if discarded is None:
        return ""
    n = len(discarded["partial_files_discarded"])
    if not n:
        return f"{lead} no partial files were left to discard"
    return (
        f"{lead} {n} partial file{'s' if n != 1 else ''} "
        f"({discarded['partial_bytes_discarded']:,} bytes) discarded"
    )


def _lock_model(op: Operation) -> None:
    Model.objects.select_for_update().filter(pk=op.model_id).first()


def _reconcile_after(op: Operation, discarded: dict | None) -> None:
    if discarded and discarded["partial_files_discarded"]:
        # Not in the transaction: a slow folder scan holds no lock, and its publish follows
        # a committed state.
        store_reconcile(folders=[repo_folder(op.model.repo_id)])
