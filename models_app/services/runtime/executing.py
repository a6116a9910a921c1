"""The load and unload executors, run in a host's runtime supervisor process."""

from __future__ import annotations

import logging
import secrets
import time

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ...errors import (
    Cancelled,
    InsufficientRam,
    InternalError,
    InvalidState,
    ModelyardError,
    error_of_code,
)
from ...executors import executor
from ...gguf import gguf_facts, gguf_header_of
from ...models import (
    ACTIVE_STATES,
    LIVE_RUNTIME_STATES,
    EventKind,
    Model,
    ModelType,
    Operation,
    OperationKind,
    RuntimeInstance,
    RuntimeState,
)
from ...runtime import host as runtime_host
from ...runtime.processes import RunnerError, RunnerSpec, RunnerTable, exit_description
from ..events import event_record, runtime_publish
from ..execution import operation_execute
from ..installations import installation_touch
from ..operations import (
    host_name,
    operation_begin,
    public_message,
)
from ..progress import heartbeat_kept
from .common import (
    EMBEDDING_TYPES,
    IN_FLIGHT_LEASE,
    _expiry,
    _model_path,
    runtime_estimate,
)
from .starting import _insufficient

logger = logging.getLogger(__name__)


# --- running (in the runtime supervisor's process) --------------------------------------

# The runner processes of this supervisor process; set by `manage.py runtime`.
_runners: RunnerTable | None = None


def runtime_runners_attach(table: RunnerTable | None) -> None:
    """Make this process the runtime of its host (the supervisor calls it once at start)."""
    global _runners
    _runners = table


def _table() -> RunnerTable:
    if _runners is None:
        raise InternalError("Load and unload run in a runtime supervisor (`manage.py runtime`).")
    return _runners


@executor(OperationKind.LOAD)
def load_execute(op: Operation) -> dict:
    """Make room (unloading least recently used idle models), start a runner, wait for it."""
    table = _table()
    model = op.model
    plan = op.plan or {}
    n_ctx = int(plan["n_ctx"])
    keep_alive = int(plan.get("keep_alive", settings.RUNTIME_KEEP_ALIVE))
    path = _model_path(model)
    estimate = int(
        plan.get("memory_estimate") or runtime_estimate(model=model, n_ctx=n_ctx, path=path)
    )
    host = host_name()
    evicted = _make_room(op=op, needed=estimate, force=bool(plan.get("force")))
    RuntimeInstance.objects.filter(model=model, state=RuntimeState.FAILED).delete()
    threads = runtime_host.runtime_threads()
    facts = model.gguf_facts or gguf_facts(gguf_header_of(path))
    embedding = model.type in EMBEDDING_TYPES
    try:
        instance = RuntimeInstance.objects.create(
            model=model,
            host=host,
            operation=op,
            address=settings.RUNTIME_ADVERTISE_ADDRESS,
            secret=secrets.token_urlsafe(24),
            n_ctx=n_ctx,
            n_gpu_layers=int(plan.get("n_gpu_layers") or 0),
            n_threads=threads,
            embedding=embedding,
            memory_estimate=estimate,
            keep_alive=keep_alive,
        )
    except IntegrityError:
        raise InvalidState(
            f"{model.key} is already loaded.", details={"model": model.key}
        ) from None
    runtime_publish()
    runner = table.take()
    RuntimeInstance.objects.filter(pk=instance.pk).update(pid=runner.pid)
    spec = RunnerSpec(
        model_path=path,
        alias=model.key,
        n_ctx=n_ctx,
        n_threads=threads,
        api_key=instance.secret,
        n_gpu_layers=instance.n_gpu_layers,
        embedding=embedding,
        pooling=_pooling(model, facts) if embedding else "",
        architecture=facts.get("architecture") or "",
        host=settings.RUNTIME_BIND,
    )
    started = time.monotonic()
    try:
        with heartbeat_kept(op):
            ready = runner.load(spec, timeout=settings.RUNTIME_LOAD_TIMEOUT)
    except RunnerError as exc:
        error = _runner_error(exc)
        _instance_failed(instance.pk, error=error)
        raise error from None
    table.loaded[instance.pk] = runner
    if Operation.objects.filter(pk=op.pk, cancel_requested=True).exists():
        table.loaded.pop(instance.pk, None)
        runner.stop()
        RuntimeInstance.objects.filter(pk=instance.pk).delete()
        runtime_publish()
        raise Cancelled(f"The load of {model.key} was cancelled; it was unloaded.")
    now = timezone.now()
    rss = runner.rss()
    RuntimeInstance.objects.filter(pk=instance.pk).update(
        state=RuntimeState.READY,
        port=ready.port,
        pid=ready.pid,
        loaded_at=now,
        load_seconds=round(time.monotonic() - started, 4),
        expires_at=_expiry(keep_alive, now),
        rss=rss,
    )
    installation_touch(model=model, now=now)
    event_record(
        kind=EventKind.LOADED,
        message=(
            f"{model.key} loaded on {host} in {ready.load_seconds:.2f} s "
            f"(n_ctx {n_ctx}, {threads} threads; estimated {_mib(estimate)}, "
            f"measured {_mib(rss)})."
        ),
        model=model,
        operation=op,
        host=host,
        n_ctx=n_ctx,
        threads=threads,
        memory_estimate=estimate,
        rss=rss,
    )
    runtime_publish()
    return {
        "instance": instance.pk,
        "host": host,
        "load_seconds": ready.load_seconds,
        "n_ctx": n_ctx,
        "threads": threads,
        "memory_estimate": estimate,
        "rss": rss,
        "evicted": evicted,
    }


def _pooling(model: Model, facts: dict) -> str:
    """Return how an embedding entry pools: its registry's pooling, the GGUF's, else mean.

    A reranker scores a pair, which llama.cpp calls "rank" pooling.
    """
    if model.type == ModelType.RERANKER:
        return "rank"
    if model.pooling in ("mean", "cls", "last_token"):
        return model.pooling
    # models_app/gguf.py names llama.cpp's numbers; "none" (a chat model's) is not an answer.
    named = {"mean": "mean", "cls": "cls", "last": "last_token"}
    return named.get(facts.get("pooling_type"), "mean")


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**2:.0f} MiB"


def _runner_error(exc: RunnerError) -> ModelyardError:
    return error_of_code(exc.code, exc.message)


def _instance_failed(instance_id: int, *, error: ModelyardError, publish: bool = True) -> None:
    RuntimeInstance.objects.filter(pk=instance_id).update(
        state=RuntimeState.FAILED,
        error_code=error.code,
        # Clients read it (the API, the page): no server path, as on the operation.
        error_message=public_message(error.message),
        port=None,
        expires_at=None,
        in_flight=0,
    )
    if publish:
        runtime_publish()


def _idle(now) -> Q:
    """The instances that may be unloaded to make room: ready, no request in flight."""
    return Q(state=RuntimeState.READY) & (
        Q(in_flight=0) | Q(last_request_at__lt=now - IN_FLIGHT_LEASE)
    )


def _make_room(*, op: Operation, needed: int, force: bool) -> list[str]:
    """Unload this host's least recently used idle instances until the load fits.

    It fits when RUNTIME_MAX_LOADED is not reached and `needed` is within both the
    budget less what the other instances hold and the RAM available now less the reserve
    (plus what the evicted hold). Raise InsufficientRam if it cannot fit, unless forced.
    """
    host = host_name()
    evicted = []
    while True:
        now = timezone.now()
        live = list(
            RuntimeInstance.objects.filter(host=host, state__in=LIVE_RUNTIME_STATES).select_related(
                "model"
            )
        )
        held = sum(i.rss or i.memory_estimate or 0 for i in live)
        room = runtime_host.host_room(runtime_host.host_facts(), held=held)
        fits_memory = needed <= room
        if len(live) < settings.RUNTIME_MAX_LOADED and (fits_memory or force):
            return evicted
        idle = [
            i
            for i in live
            if RuntimeInstance.objects.filter(_idle(now), pk=i.pk).exists()
            and not Operation.objects.filter(model=i.model, state__in=ACTIVE_STATES).exists()
        ]
        if not idle:
            if len(live) >= settings.RUNTIME_MAX_LOADED:
                names = ", ".join(i.model.key for i in live)
                raise InsufficientRam(
                    f"{op.model.key} cannot load on {host}: RUNTIME_MAX_LOADED is "
                    f"{settings.RUNTIME_MAX_LOADED} and {names} "
                    f"{'is' if len(live) == 1 else 'are'} busy (serving a request, or held by "
                    "an operation); a busy model is never unloaded to make room. "
                    "Try again when it is idle.",
                    details={"host": host, "loaded": [i.model.key for i in live]},
                )
            raise _insufficient(
                model=op.model,
                needed=needed,
                budget=room,
                host=host,
                n_ctx=int(op.plan["n_ctx"]),
            )
        victim = min(idle, key=lambda i: i.last_request_at or i.loaded_at or i.created_at)
        _unload_instance(victim, reason=f"to make room for {op.model.key}", parent=op)
        evicted.append(victim.model.key)


@executor(OperationKind.UNLOAD)
def unload_execute(op: Operation) -> dict:
    """Stop the model's runner on this host and forget its instance."""
    instance = RuntimeInstance.objects.filter(
        model=op.model, host=host_name(), state__in=LIVE_RUNTIME_STATES
    ).first()
    if instance is None:
        return {"unloaded": False}
    return _stop_instance(instance, reason="asked", operation=op)


def _unload_instance(instance: RuntimeInstance, *, reason: str, parent: Operation | None) -> dict:
    """Unload an instance as an operation of its own (keep-alive expiry, eviction)."""
    try:
        op = operation_begin(kind=OperationKind.UNLOAD, model=instance.model, parent=parent)
    except ModelyardError:
        return {"unloaded": False}  # another operation holds the model now

    result = {}

    def execute(op):
        result.update(_stop_instance(instance, reason=reason, operation=op))
        return result

    operation_execute(operation=op, execute=execute)
    return result


def _stop_instance(instance: RuntimeInstance, *, reason: str, operation: Operation | None) -> dict:
    """Stop the instance's runner, remove its row, record and publish it."""
    table = _table()
    RuntimeInstance.objects.filter(pk=instance.pk).update(state=RuntimeState.UNLOADING)
    runtime_publish()
    runner = table.loaded.pop(instance.pk, None)
    rss = runner.rss() if runner is not None else instance.rss
    if runner is not None:
        runner.stop()
    # The row goes with its event: no reader sees one without the other.
    with transaction.atomic():
        RuntimeInstance.objects.filter(pk=instance.pk).delete()
        event_record(
            kind=EventKind.UNLOADED,
            message=f"{instance.model.key} unloaded from {instance.host} ({reason}).",
            model=instance.model,
            operation=operation,
            host=instance.host,
            rss=rss,
        )
    runtime_publish()
    return {"unloaded": True, "host": instance.host, "rss_freed": rss}


def runtime_runner_died(*, instance_id: int, code: int | None) -> None:
    """Record that a loaded model's runner died on its own (a crash, SIGKILL, out of memory)."""
    instance = RuntimeInstance.objects.select_related("model").filter(pk=instance_id).first()
    if instance is None:
        return
    error = InternalError(
        f"The runner of {instance.model.key} died ({exit_description(code)}); "
        "the next request loads it again."
    )
    # The state and its event commit together: no reader sees one without the other.
    with transaction.atomic():
        _instance_failed(instance_id, error=error, publish=False)
        event_record(
            kind=EventKind.FAILED,
            message=error.message,
            model=instance.model,
            error_code=error.code,
            host=instance.host,
        )
    runtime_publish()
