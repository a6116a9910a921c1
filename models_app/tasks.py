"""django-q2 tasks: take ids, call one service, return."""

from .services.execution import operation_run
from .services.operations import operations_reap, partials_cleanup
from .services.pruning import prune_run


def run_operation(operation_id: int) -> str:
    return operation_run(operation_id=operation_id)


def reap() -> dict:
    """Mark operations of dead workers interrupted; remove abandoned partial files."""
    return {"interrupted": operations_reap(), "partials_removed": partials_cleanup()}


def prune() -> dict:
    """Prune the store to its quota and free-disk floor (the daily schedule and the API)."""
    plan = prune_run(dry_run=False)
    return {"removed": plan.removed, "failed": plan.failed, "partials": plan.partial_files}
