"""django-q2 tasks: take ids, call one service, return."""

from .engine import operation_run
from .services.heartbeats import heartbeats_prune
from .services.operations import operations_reap, operations_requeue
from .services.pruning import partials_cleanup, prune_start
from .services.runtime import runtime_orphans_fail
from .services.updates import update_checks_due


def run_operation(operation_id: int) -> str:
    return operation_run(operation_id=operation_id)


def reap() -> dict:
    """Interrupt dead workers' operations, requeue lost tasks, remove abandoned partial files.

    Once a minute: the fallback for a qcluster run without `manage.py run`, whose
    supervisor reaps every few seconds.
    """
    return {
        "interrupted": operations_reap(),
        "requeued": operations_requeue(),
        "runtime_stranded": runtime_orphans_fail(),
        "partials_removed": partials_cleanup(),
        "heartbeats_removed": heartbeats_prune(),
    }


def prune() -> dict:
    """Queue a prune to the quota and free-disk floor (the daily schedule)."""
    result, _ = prune_start()
    return {"status": result.status, "operation": result.operation.pk if result.operation else None}


def update_check() -> dict:
    """Check the installed entries due for an update check (UPDATE_CHECK_INTERVAL; the schedule
    runs every 15 minutes and each entry is checked once per interval)."""
    return update_checks_due()
