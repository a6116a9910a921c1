"""The kind → executor registry: each kind of operation registers the function that runs it.

A leaf: it imports only the models. A kind's module decorates its executor with
`@executor(kind)`; the engine (models_app/engine.py) imports those modules, looks the
kind of a claimed operation up here and runs it. An executor takes the running
Operation and returns the figures of its end (stored on the row and its event); it
raises a ModelyardError to fail, Cancelled to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .models import Operation, OperationKind

Execute = Callable[[Operation], dict]


@dataclass(frozen=True)
class Executor:
    kind: str
    execute: Execute
    # "model": one model's files, exclusive per model; "store": store-wide (prune).
    scope: str = "model"


_EXECUTORS: dict[str, Executor] = {}


def executor(kind: str, *, scope: str = "model") -> Callable[[Execute], Execute]:
    """Register the decorated function as the executor of an operation kind."""
    if kind not in OperationKind.values:
        raise ValueError(f"{kind!r} is not an OperationKind; add it there first.")
    if scope not in ("model", "store"):
        raise ValueError(f"scope must be 'model' or 'store', not {scope!r}.")

    def register(execute: Execute) -> Execute:
        registered = _EXECUTORS.get(kind)
        if registered is not None and registered.execute is not execute:
            raise ValueError(f"{kind} already has an executor: {registered.execute.__qualname__}.")
        _EXECUTORS[kind] = Executor(kind=kind, execute=execute, scope=scope)
        return execute

    return register


def executor_for(kind: str) -> Executor | None:
    """Return the executor registered for a kind, or None."""
    return _EXECUTORS.get(kind)


def registered_kinds() -> list[str]:
    """Return the kinds that have an executor, in OperationKind's order."""
    return [kind for kind in OperationKind.values if kind in _EXECUTORS]
