"""Starting loads and unloads (any process): the checks, the host, the operation."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ...errors import (
    InsufficientRam,
    InvalidState,
    ModelyardError,
    TimedOut,
    Unavailable,
)
from ...models import (
    LIVE_RUNTIME_STATES,
    RUNTIME_KINDS,
    Model,
    Operation,
    OperationKind,
    OperationState,
    ProcessHeartbeat,
    ProcessRole,
    RuntimeInstance,
    RuntimeState,
)
from ...phrasing import type_label
from ...runtime import host as runtime_host
from ..events import runtime_publish
from ..operations import (
    StartResult,
    operation_fail_queued,
    operation_start,
)
from ..progress import heartbeat_kept
from .common import (
    _expiry,
    _host_for,
    _keep_alive,
    _model_path,
    _n_ctx,
    runtime_check_runnable,
    runtime_estimate,
    runtime_host_ring,
)

logger = logging.getLogger(__name__)


# --- starting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """What a load request did: queued a load, found one running, or found it loaded."""

    start: StartResult | None
    instance: RuntimeInstance | None
    status: str  # "loading" | "loaded"

    @property
    def http_status(self) -> int:
        return 202 if self.start is not None and self.start.created else 200

    @property
    def operation(self) -> Operation | None:
        return self.start.operation if self.start is not None else None


def runtime_load_start(
    *,
    model: Model,
    user=None,
    n_ctx: int | None = None,
    n_gpu_layers: int = 0,
    keep_alive: int | None = None,
    force: bool = False,
    host: str | None = None,
) -> LoadResult:
    """Load a model on a host's runtime (the most capacious unless `host` is given).

    Already loaded: its keep-alive is renewed (with `keep_alive` when given) and it is
    returned. Refused with ERR_INSUFFICIENT_RAM, naming both numbers and the largest
    installed model of the type that fits, when the estimate exceeds the host's budget,
    unless `force`.
    """
    runtime_check_runnable(model)
    keep_alive = _keep_alive(keep_alive)
    n_ctx = _n_ctx(model, n_ctx)
    live = RuntimeInstance.objects.filter(model=model, state=RuntimeState.READY).first()
    if live is not None:
        RuntimeInstance.objects.filter(pk=live.pk).update(
            keep_alive=keep_alive, expires_at=_expiry(keep_alive)
        )
        live.refresh_from_db()
        runtime_publish()
        return LoadResult(None, live, "loaded")
    path = _model_path(model)
    target = _host_for(host=host)
    estimate = runtime_estimate(model=model, n_ctx=n_ctx, path=path)
    budget = runtime_host.host_budget(target.facts)
    if estimate > budget and not force:
        raise _insufficient(
            model=model, needed=estimate, budget=budget, host=target.host, n_ctx=n_ctx
        )
    plan = {
        "n_ctx": n_ctx,
        "n_gpu_layers": n_gpu_layers,
        "keep_alive": keep_alive,
        "force": force,
        "memory_estimate": estimate,
    }
    start = operation_start(
        kind=OperationKind.LOAD, model=model, user=user, plan=plan, host=target.host
    )
    if start.created:
        transaction.on_commit(lambda: runtime_host_ring(host=target.host))
    return LoadResult(start, None, "loading")


def _insufficient(*, model: Model, needed: int, budget: int, host: str, n_ctx: int):
    smaller = _largest_fitting(model=model, budget=budget, n_ctx=n_ctx)
    message = (
        f"{model.key} needs about {_gib(needed)} at n_ctx {n_ctx}, and the runtime on {host} "
        f"has {_gib(budget)} for models."
    )
    if smaller is not None:
        message += f" Try a smaller model: {smaller.key} fits."
    else:
        message += (
            f" No other installed {type_label(model.type)} entry fits; force=true loads it anyway."
        )
    return InsufficientRam(
        message,
        details={
            "model": model.key,
            "required": needed,
            "available": budget,
            "host": host,
            "n_ctx": n_ctx,
            "fits": smaller.key if smaller is not None else None,
        },
    )


def _largest_fitting(*, model: Model, budget: int, n_ctx: int) -> Model | None:
    candidates = (
        Model.objects.filter(type=model.type, installation__isnull=False)
        .exclude(gguf_file="")
        .exclude(pk=model.pk)
    )
    best, best_size = None, -1
    for other in candidates:
        try:
            needed = runtime_estimate(model=other, n_ctx=n_ctx, path=_model_path(other))
        except ModelyardError:
            continue
        if needed <= budget and needed > best_size:
            best, best_size = other, needed
    return best


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def runtime_unload_start(*, model: Model, user=None) -> StartResult:
    """Unload a loaded model: its host's runtime stops the runner (the memory comes back)."""
    instance = (
        RuntimeInstance.objects.filter(model=model, state__in=LIVE_RUNTIME_STATES)
        .order_by("-created_at")
        .first()
    )
    if instance is None:
        raise InvalidState(f"{model.key} is not loaded.", details={"model": model.key})
    start = operation_start(kind=OperationKind.UNLOAD, model=model, user=user, host=instance.host)
    if start.created:
        transaction.on_commit(lambda: runtime_host_ring(host=instance.host))
    return start


def runtime_unload_for(*, model: Model, operation: Operation, timeout: float = 30.0) -> bool:
    """Unload the model inside another operation of it (a delete); return True if it was loaded.

    That operation holds the model, so no unload operation can start: the instance is
    marked `unloading` and its host's supervisor stops the runner and removes the row.
    Wait for that (keeping the operation's heartbeat), at most `timeout` seconds.
    """
    hosts = set(
        RuntimeInstance.objects.filter(model=model, state__in=LIVE_RUNTIME_STATES).values_list(
            "host", flat=True
        )
    )
    marked = RuntimeInstance.objects.filter(model=model, state__in=LIVE_RUNTIME_STATES).update(
        state=RuntimeState.UNLOADING, operation=operation
    )
    for host in hosts:
        runtime_host_ring(host=host)
    failed = RuntimeInstance.objects.filter(model=model, state=RuntimeState.FAILED).delete()[0]
    if not marked:
        if failed:
            runtime_publish()
        return False
    runtime_publish()
    deadline = time.monotonic() + timeout
    with heartbeat_kept(operation):
        while RuntimeInstance.objects.filter(model=model, state__in=LIVE_RUNTIME_STATES).exists():
            if time.monotonic() > deadline:
                raise TimedOut(
                    f"{model.key} was still loaded after {timeout:g} s: its runtime did not "
                    "unload it; nothing was deleted.",
                    details={"model": model.key},
                )
            time.sleep(0.1)
    return True


def runtime_orphans_fail(*, now=None) -> list[int]:
    """Fail the loads and unloads queued for a host whose runtime supervisor is not running.

    Nothing would ever claim them, and a queued operation holds its model (no delete, no
    other load). Only those queued for longer than three heartbeat intervals: a supervisor
    that just started has beaten by then. Return their ids.
    """
    now = now or timezone.now()
    grace = timedelta(seconds=3 * settings.PROCESS_HEARTBEAT_INTERVAL)
    alive = set(
        ProcessHeartbeat.objects.filter(
            role=ProcessRole.RUNTIME, beat_at__gte=now - grace
        ).values_list("host", flat=True)
    )
    stranded = (
        Operation.objects.select_related("model")
        .filter(state=OperationState.QUEUED, kind__in=RUNTIME_KINDS, created_at__lt=now - grace)
        .exclude(worker_host__in=alive)
    )
    failed = []
    for op in stranded:
        error = Unavailable(
            f"No runtime supervisor is running on {op.worker_host} to {op.kind} {op.target}."
        )
        if operation_fail_queued(operation=op, error=error):
            failed.append(op.pk)
    return failed
