"""The operation engine: the body of every background job.

The django-q2 task hands over an operation id; the engine claims the row, looks its kind
up in the executor registry (models_app/executors.py) and runs that executor to an end
state (services/execution.py). It sits at the top of the services graph: nothing below
imports it. A new kind is one module with an `@executor(kind)` function, and one line
below that imports the module so that it registers.
"""

from __future__ import annotations

from .errors import InternalError
from .executors import Execute, executor_for
from .models import Operation
from .services import (  # noqa: F401  (each registers its executors)
    deletion,
    downloads,
    exports,
    imports,
    pruning,
    runtime,
    updates,
    verification,
)
from .services.execution import operation_execute
from .services.operations import operation_begin, operation_claim


def operation_run(*, operation_id: int) -> str:
    """Claim a queued operation and run its kind's executor; return the end state.

    "skipped" when another worker has it (or it was cancelled before it started).
    """
    op = operation_claim(operation_id=operation_id)
    if op is None:
        return "skipped"
    return operation_execute(operation=op, execute=_execute_of(op.kind))


def operation_run_here(*, kind: str, model=None, user=None, plan=None) -> Operation:
    """Run an operation of a kind in this process, in the foreground (a CLI command).

    The operation is persisted and exclusive like any other, but never enqueued.
    Return it, ended.
    """
    op = operation_begin(kind=kind, model=model, user=user, plan=plan)
    operation_execute(operation=op, execute=_execute_of(kind))
    op.refresh_from_db()
    return op


def _execute_of(kind: str) -> Execute:
    """Return the registered executor of a kind; without one, an executor that fails."""
    registered = executor_for(kind)
    if registered is not None:
        return registered.execute

    def unregistered(op: Operation) -> dict:
        raise InternalError(f"No executor is registered for {kind} operations.")

    return unregistered
