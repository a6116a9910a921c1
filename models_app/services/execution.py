"""Run one operation to an end state: the body of the django-q2 task."""

from __future__ import annotations

import logging

from ..errors import Cancelled, ModelyardError
from ..models import Operation, OperationState
from .deletion import delete_execute
from .downloads import LostOwnership, download_execute
from .events import operation_outcome_publish
from .installed import store_reconcile
from .operations import operation_claim, operation_finish

logger = logging.getLogger(__name__)


def operation_run(*, operation_id: int) -> str:
    """Claim a queued operation and run it to an end state; return that state."""
    op = operation_claim(operation_id=operation_id)
    if op is None:
        return "skipped"
    try:
        if op.kind == "download":
            figures = download_execute(op)
        elif op.kind == "delete":
            figures = delete_execute(op)
        else:
            raise ModelyardError(f"{op.kind} operations are not available yet.")
    except LostOwnership:
        logger.warning("operation %s was taken from this worker; stopping", op.pk)
        return "lost"
    except Cancelled as exc:
        operation_finish(operation=op, state=OperationState.CANCELLED, error=exc)
    except ModelyardError as exc:
        operation_finish(operation=op, state=OperationState.FAILED, error=exc)
    except Exception as exc:
        logger.exception("operation %s crashed", op.pk)
        operation_finish(
            operation=op,
            state=OperationState.FAILED,
            error=ModelyardError(f"Unexpected error: {type(exc).__name__}: {exc}"),
        )
    else:
        operation_finish(operation=op, state=OperationState.SUCCEEDED, **figures)
        operation_outcome_publish(op)
        return OperationState.SUCCEEDED
    try:
        store_reconcile(publish=False)  # partial files changed: keep the cache figures true
    except Exception:
        logger.exception("reconcile after operation %s failed", op.pk)
    operation_outcome_publish(op)  # after the reconcile, so the cache figures are current
    return Operation.objects.filter(pk=op.pk).values_list("state", flat=True).first()
