"""The runtime: load and unload GGUF models, route requests to the runner that has one.

Loads and unloads are operations (kinds `load`, `unload`), exclusive per model like every
other; they are not enqueued: the runtime supervisor of the chosen host claims them and
runs their executors (below) in its own process, because it owns the runner processes
(services/runtime_host.py, models_app/runtime/). A loaded model is a `RuntimeInstance`
row; at most one live instance per model across every host.

The request path of the OpenAI-compatible proxy (`runtime_route`, `runtime_request_end`)
is here too: every request is counted on its instance (never evicted while it has one in
flight), resets the keep-alive, and touches the installation (prune's LRU).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from ..errors import (
    Cancelled,
    FormatError,
    InsufficientRam,
    InternalError,
    InvalidInput,
    InvalidState,
    ModelyardError,
    NotFound,
    NotInstalled,
    TimedOut,
    Unavailable,
    error_of_code,
)
from ..executors import executor
from ..gguf import gguf_facts, gguf_header_of
from ..models import (
    ACTIVE_STATES,
    LIVE_RUNTIME_STATES,
    ActiveModel,
    EventKind,
    Installation,
    Model,
    ModelType,
    Operation,
    OperationKind,
    OperationState,
    ProcessHeartbeat,
    ProcessRole,
    RuntimeInstance,
    RuntimeState,
)
from ..phrasing import type_label, with_article
from ..runtime import host as runtime_host
from ..runtime.memory import memory_estimate
from ..runtime.processes import RunnerError, RunnerSpec, RunnerTable, exit_description
from ..store import get_store
from .events import event_record, runtime_publish
from .installations import installation_touch
from .operations import StartResult, host_name, operation_begin, operation_start, public_message
from .progress import heartbeat_kept

logger = logging.getLogger(__name__)

# The model types the built-in runtime serves (GGUF files only).
RUNNABLE_TYPES = (ModelType.LLM, ModelType.EMBEDDING, ModelType.RERANKER)
# Types whose runner is started for embeddings rather than generation.
EMBEDDING_TYPES = (ModelType.EMBEDDING, ModelType.RERANKER)
# A request counted in flight for longer than this no longer protects its instance from
# eviction and expiry (its web process died without ending it).
IN_FLIGHT_LEASE = timedelta(minutes=30)


# --- what may run where -----------------------------------------------------------------


def runtime_check_runnable(model: Model) -> None:
    """Raise unless the built-in runtime can run this entry (a GGUF file of a runnable type)."""
    if not model.gguf_file or model.type not in RUNNABLE_TYPES:
        raise FormatError(
            f"{model.key} is {with_article(type_label(model.type))} entry in safetensors "
            "format, for use from other tools through the models store "
            "(sentence-transformers, transformers); the built-in runtime runs GGUF models only.",
            details={"model": model.key, "format": "safetensors"},
        )


def runtime_hosts(*, fresh_within: float | None = None) -> list[ProcessHeartbeat]:
    """Return the runtime supervisors whose heartbeat is fresh, most capacious first."""
    within = fresh_within or 3 * settings.PROCESS_HEARTBEAT_INTERVAL
    rows = ProcessHeartbeat.objects.filter(
        role=ProcessRole.RUNTIME, beat_at__gte=timezone.now() - timedelta(seconds=within)
    )
    return sorted(rows, key=lambda hb: -int(hb.facts.get("ram_available") or 0))


def _host_for(*, host: str | None) -> ProcessHeartbeat:
    hosts = runtime_hosts()
    if host:
        hosts = [hb for hb in hosts if hb.host == host]
        if not hosts:
            raise Unavailable(
                f"No runtime supervisor is running on {host}.", details={"host": host}
            )
    if not hosts:
        raise Unavailable(
            "No runtime supervisor is running: start `manage.py runtime` "
            "(`manage.py run` starts one unless RUNTIME_ENABLED is false)."
        )
    return hosts[0]


def _model_path(model: Model) -> str:
    installation = Installation.objects.filter(model=model).first()
    if installation is None:
        raise NotInstalled(
            f"{model.key} is not installed; download it before loading it.",
            details={"model": model.key},
        )
    path = get_store().installed_file(installation.snapshot_path, model.gguf_file)
    if path is None:
        raise NotInstalled(
            f"{model.key}'s file {model.gguf_file} is missing from the store; download it again.",
            details={"model": model.key, "file": model.gguf_file},
        )
    return str(path)


def runtime_estimate(*, model: Model, n_ctx: int, path: str | None = None) -> int:
    """Return the memory a load of this model at n_ctx needs, in bytes (the header's facts)."""
    facts = model.gguf_facts or {}
    if not facts and path is not None:
        facts = gguf_facts(gguf_header_of(path))
    return memory_estimate(facts=facts, n_ctx=n_ctx).total


def _keep_alive(value: int | None) -> int:
    if value is None:
        return settings.RUNTIME_KEEP_ALIVE
    if value < -1:
        raise InvalidInput("keep_alive is seconds, -1 (forever) or 0 (unload after the request).")
    return value


def _n_ctx(model: Model, n_ctx: int | None) -> int:
    """Return the context a load uses: as asked, else the default (at most the model's own)."""
    trained = model.context_window or (model.gguf_facts or {}).get("context_length")
    if n_ctx is None:
        return min(settings.RUNTIME_DEFAULT_N_CTX, trained or settings.RUNTIME_DEFAULT_N_CTX)
    if trained and n_ctx > trained:
        raise InvalidInput(
            f"n_ctx {n_ctx} is more than {model.key} was trained for ({trained}).",
            details={"model": model.key, "n_ctx": n_ctx, "context_window": trained},
        )
    return n_ctx


def _expiry(keep_alive: int, now=None):
    if keep_alive < 0:
        return None
    return (now or timezone.now()) + timedelta(seconds=keep_alive)


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
    return operation_start(kind=OperationKind.UNLOAD, model=model, user=user, host=instance.host)


def runtime_unload_for(*, model: Model, operation: Operation, timeout: float = 30.0) -> bool:
    """Unload the model inside another operation of it (a delete); return True if it was loaded.

    That operation holds the model, so no unload operation can start: the instance is
    marked `unloading` and its host's supervisor stops the runner and removes the row.
    Wait for that (keeping the operation's heartbeat), at most `timeout` seconds.
    """
    marked = RuntimeInstance.objects.filter(model=model, state__in=LIVE_RUNTIME_STATES).update(
        state=RuntimeState.UNLOADING, operation=operation
    )
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
            embedding=model.type in EMBEDDING_TYPES,
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
        embedding=instance.embedding,
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
        facts = runtime_host.host_facts()
        budget_left = runtime_host.host_budget(facts) - held
        ram_left = facts["ram_available"] - settings.RUNTIME_MEMORY_RESERVE
        fits_memory = needed <= min(budget_left, ram_left)
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
                budget=max(0, min(budget_left, ram_left)),
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
    from .execution import operation_execute

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


# --- the request path (the /v1 proxy) ---------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where one request goes: the runner of a ready instance, and what it cost to get there."""

    instance_id: int
    model_key: str
    model_id: int
    url: str
    secret: str
    load_seconds: float  # waited for a load (JIT); 0 when it was loaded


def runtime_model_for(*, key: str | None, type: str) -> Model:
    """Return the entry a request names (a registry key) or the active model of the type."""
    if key:
        model = Model.objects.filter(key=key).first()
        if model is None:
            raise NotFound(f"There is no model {key!r} in the registry.", details={"model": key})
        return model
    active = ActiveModel.objects.select_related("model").filter(type=type).first()
    if active is None:
        raise InvalidInput(
            f"No model was given and no {type_label(type)} entry is active: name one with "
            "`model` (a registry key) or activate one.",
            details={"type": type},
        )
    return active.model


def runtime_route(
    *, model: Model, keep_alive: int | None = None, wait: float | None = None
) -> Route:
    """Count a request on the model's ready instance, loading it first (JIT); return the route.

    Not loaded, or failed: it is loaded again (a load already running is waited for, and so
    is an unload that is finishing); a load that fails fails the request with its error.
    The caller waits up to `wait` seconds (RUNTIME_LOAD_TIMEOUT). End every route with
    `runtime_request_end`.
    """
    runtime_check_runnable(model)
    _keep_alive(keep_alive)
    started = time.monotonic()
    waited = 0.0
    deadline = started + (wait if wait is not None else settings.RUNTIME_LOAD_TIMEOUT)
    load_op: Operation | None = None
    while True:
        route = _request_begin(model=model, waited=waited)
        if route is not None:
            return route
        if load_op is None:
            load_op = _load_to_wait_for(model=model, keep_alive=keep_alive)
        else:
            # Only the load this request waits for decides: a failed instance of an earlier
            # load (the runner that died) is what this load replaces.
            load_op.refresh_from_db()
            if load_op.state in (
                OperationState.FAILED,
                OperationState.CANCELLED,
                OperationState.INTERRUPTED,
            ):
                raise _operation_error(load_op)
            if load_op.state == OperationState.SUCCEEDED:
                load_op = None  # ready: routed next round (or already unloaded: load again)
        if time.monotonic() > deadline:
            raise TimedOut(
                f"{model.key} did not become ready within {deadline - started:.0f} s.",
                details={"model": model.key},
            )
        time.sleep(0.02)
        waited = time.monotonic() - started


def _load_to_wait_for(*, model: Model, keep_alive: int | None) -> Operation | None:
    """Return the load a request for a model that is not ready waits for.

    The load that is running, else a new one; None while the model is ready (the next
    round routes it) or is being unloaded (it is loaded again once the unload ended).
    """
    instance = RuntimeInstance.objects.filter(model=model, state__in=LIVE_RUNTIME_STATES).first()
    if instance is not None:
        if instance.state == RuntimeState.LOADING and instance.operation_id:
            return Operation.objects.filter(pk=instance.operation_id).first()
        return None
    active = Operation.objects.filter(model=model, state__in=ACTIVE_STATES).first()
    if active is not None and active.kind == OperationKind.UNLOAD:
        return None  # its instance is gone; the operation ends in a moment
    return runtime_load_start(model=model, keep_alive=keep_alive).operation


def _operation_error(op: Operation) -> ModelyardError:
    return error_of_code(
        op.error_code, op.error_message or f"The load of {op.target} ended {op.state}."
    )


def _request_begin(*, model: Model, waited: float) -> Route | None:
    now = timezone.now()
    with transaction.atomic():
        instance = (
            RuntimeInstance.objects.select_for_update()
            .filter(model=model, state=RuntimeState.READY)
            .first()
        )
        if instance is None:
            return None
        RuntimeInstance.objects.filter(pk=instance.pk).update(
            in_flight=F("in_flight") + 1,
            requests_served=F("requests_served") + 1,
            last_request_at=now,
        )
    return Route(
        instance_id=instance.pk,
        model_key=model.key,
        model_id=model.pk,
        url=f"http://{_url_host(instance.address)}:{instance.port}",
        secret=instance.secret,
        load_seconds=round(waited, 4),
    )


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def runtime_request_end(*, route: Route, keep_alive: int | None = None) -> None:
    """End a request: renew the keep-alive (0 unloads now), record the model's use."""
    keep_alive = _keep_alive(keep_alive) if keep_alive is not None else None
    now = timezone.now()
    # Read and write under the row's lock: two requests ending at once each read the
    # keep-alive and the count the other wrote (one with keep_alive 0 and one without
    # left it at the default, in flight by neither, and never unloaded).
    with transaction.atomic():
        instance = (
            RuntimeInstance.objects.select_for_update()
            .select_related("model")
            .filter(pk=route.instance_id)
            .first()
        )
        if instance is None:
            return
        keep = keep_alive if keep_alive is not None else instance.keep_alive
        in_flight = max(0, instance.in_flight - 1)
        RuntimeInstance.objects.filter(pk=route.instance_id).update(
            in_flight=in_flight,
            last_request_at=now,
            keep_alive=keep,
            expires_at=_expiry(keep, now),
        )
    installation_touch(model=instance.model, now=now)
    # Unload now only after the last request in flight: another one (a stream waiting its
    # turn in the runner) would be cut off. Then, and if another operation holds the model,
    # the supervisor's expiry unloads it (it expired now).
    if keep == 0 and in_flight == 0:
        with contextlib.suppress(ModelyardError):
            runtime_unload_start(model=instance.model)
    runtime_publish()
