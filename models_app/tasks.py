"""django-q2 tasks: take ids, call one service, return."""

from .engine import operation_run
from .services.operations import operations_reap, operations_requeue
from .services.pruning import partials_cleanup, prune_start


def run_operation(operation_id: int) -> str:
    return operation_run(operation_id=operation_id)


def reap() -> dict:
    """Mark dead workers' operations interrupted, requeue lost tasks, remove stale partials."""
    return {
        "interrupted": operations_reap(),
        "requeued": operations_requeue(),
        "partials_removed": partials_cleanup(),
    }


def prune() -> dict:
    """Queue a prune to the quota and free-disk floor (the daily schedule)."""
    result, _ = prune_start()
    return {"status": result.status, "operation": result.operation.pk if result.operation else None}
