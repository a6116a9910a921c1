"""Run one claimed operation's executor to an end state, whatever the executor does."""

from __future__ import annotations

import logging
import secrets

from ..errors import Cancelled, InternalError, ModelyardError
from ..executors import Execute
from ..models import Operation, OperationState
from ..store import repo_folder
from .events import operation_outcome_publish
from .operations import operation_finish
from .progress import LostOwnership
from .reconcile import store_reconcile

logger = logging.getLogger(__name__)


def operation_execute(*, operation: Operation, execute: Execute) -> str:
    """Run `execute` on a running operation and end it; return the end state.

    A ModelyardError fails it with its code, Cancelled cancels it; any other exception
    fails it with a generic message and a reference id that the log line (with the
    traceback) carries too. Failure and cancel leave partial files behind: the model's
    repo folder is reconciled before the outcome is published.
    """
    op = operation
    try:
        result = execute(op)
    except LostOwnership:
        logger.warning("operation %s was taken from this worker; stopping", op.pk)
        return "lost"
    except Cancelled as exc:
        operation_finish(
            operation=op, state=OperationState.CANCELLED, error=exc, result=exc.details
        )
    except ModelyardError as exc:
        operation_finish(operation=op, state=OperationState.FAILED, error=exc, result=exc.details)
    except Exception:
        reference = secrets.token_hex(6)
        logger.exception("operation %s (%s) crashed [ref %s]", op.pk, op.kind, reference)
        error = InternalError(
            f"Unexpected error (reference {reference}); the server log has the details."
        )
        operation_finish(operation=op, state=OperationState.FAILED, error=error)
    else:
        operation_finish(operation=op, state=OperationState.SUCCEEDED, result=result)
        operation_outcome_publish(op)
        return OperationState.SUCCEEDED
    if op.model_id:
        try:
            # Partial files changed: keep the cache figures true.
            store_reconcile(folders=[repo_folder(op.model.repo_id)], publish=False)
        except Exception:
            logger.exception("reconcile after operation %s failed", op.pk)
    operation_outcome_publish(op)  # after the reconcile, so the cache figures are current
    return Operation.objects.filter(pk=op.pk).values_list("state", flat=True).first()
