"""The request path of the /v1 proxy: route to a ready instance (JIT load), end it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Subquery
from django.utils import timezone

from ...errors import (
    AlreadyRunning,
    InternalError,
    InvalidInput,
    ModelyardError,
    NotFound,
    TimedOut,
    error_of_code,
)
from ...models import (
    ACTIVE_STATES,
    ActiveModel,
    Model,
    Operation,
    OperationKind,
    OperationState,
    RuntimeInstance,
    RuntimeState,
)
from ...phrasing import type_label
from ..events import runtime_publish
from ..installations import installation_touch
from .common import (
    _expiry,
    _keep_alive,
    runtime_check_runnable,
    runtime_host_ring,
)
from .starting import runtime_load_start

logger = logging.getLogger(__name__)


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


# What a request needs of a ready instance and its model: one narrow row, no ORM instance.
_READY_COLUMNS = ("pk", "address", "port", "secret", "model_id", "model__key")


def runtime_route_ready(*, key: str | None, type: str, types) -> Route | None:
    """Count a request on the ready instance of the entry it names; None if there is none.

    The entry is `key`, or the active model of `type` when None; it must be of one of
    `types` (those the endpoint serves). The path of a request to a loaded model, before its
    first token: two narrow statements (read the instance with its model's key, count the
    request on it while it is still ready), where `runtime_model_for` and `runtime_route`
    take five and build three ORM rows. None (not loaded, loading, of another type,
    unknown, or no longer ready) sends the caller the full way, which loads or explains.
    """
    ready = RuntimeInstance.objects.filter(state=RuntimeState.READY, model__type__in=types)
    if key:
        ready = ready.filter(model__key=key)
    else:
        active = ActiveModel.objects.filter(type=type).values("model_id")
        ready = ready.filter(model_id=Subquery(active))
    return _count_request(ready.values_list(*_READY_COLUMNS).first(), waited=0.0)


def _count_request(row: tuple | None, *, waited: float) -> Route | None:
    """Count a request on a ready instance's row (`_READY_COLUMNS`); None if none, or not ready.

    One conditional statement, with no lock held: an instance that began to unload between
    the read and the count is not counted, and the caller goes the full way (waits, loads
    again).
    """
    if row is None:
        return None
    pk, address, port, secret, model_id, model_key = row
    counted = RuntimeInstance.objects.filter(pk=pk, state=RuntimeState.READY).update(
        in_flight=F("in_flight") + 1,
        requests_served=F("requests_served") + 1,
        last_request_at=timezone.now(),
    )
    if not counted:
        return None
    return Route(
        instance_id=pk,
        model_key=model_key,
        model_id=model_id,
        url=f"http://{_url_host(address)}:{port}",
        secret=secret,
        load_seconds=round(waited, 4),
    )


def runtime_route(
    *, model: Model, keep_alive: int | None = None, wait: float | None = None
) -> Route:
    """Count a request on the model's ready instance, loading it first (JIT); return the route.

    Not loaded (or its last instance failed): a load is started, or the one running is
    joined; an unload in progress is waited out first. The caller waits up to `wait`
    seconds (RUNTIME_LOAD_TIMEOUT) in all. End every route with `runtime_request_end`.
    """
    runtime_check_runnable(model)
    _keep_alive(keep_alive)
    started = time.monotonic()
    deadline = started + (wait if wait is not None else settings.RUNTIME_LOAD_TIMEOUT)
    load_id: int | None = None
    loads = 0
    while True:
        route = _request_begin(model=model, waited=time.monotonic() - started)
        if route is not None:
            return route
        if load_id is None:
            try:
                result = runtime_load_start(model=model, keep_alive=keep_alive)
            except AlreadyRunning as exc:
                if exc.details.get("kind") != OperationKind.UNLOAD:
                    raise
                result = None  # an unload (keep-alive expiry) ends first; then load again
            if result is not None and result.operation is not None:
                load_id, loads = result.operation.pk, loads + 1
        else:
            op = Operation.objects.filter(pk=load_id).first()
            if op is None or op.state not in ACTIVE_STATES:
                if op is not None and op.state != OperationState.SUCCEEDED:
                    raise _operation_error(op)
                if loads >= 2:  # loaded twice and gone twice before a request reached it
                    instance = RuntimeInstance.objects.filter(model=model).first()
                    raise (
                        _error_of(instance)
                        if instance
                        else InternalError(
                            f"{model.key} was loaded but was gone before the request reached it."
                        )
                    )
                load_id = None
        if time.monotonic() > deadline:
            raise TimedOut(
                f"{model.key} did not become ready within {deadline - started:.0f} s.",
                details={"model": model.key},
            )
        time.sleep(0.02)


def _operation_error(op: Operation) -> ModelyardError:
    return error_of_code(
        op.error_code, op.error_message or f"The load of {op.target} ended {op.state}."
    )


def _error_of(instance: RuntimeInstance) -> ModelyardError:
    return error_of_code(
        instance.error_code, instance.error_message or f"{instance.model.key} failed to load."
    )


def _request_begin(*, model: Model, waited: float) -> Route | None:
    ready = RuntimeInstance.objects.filter(model=model, state=RuntimeState.READY)
    return _count_request(ready.values_list(*_READY_COLUMNS).first(), waited=waited)


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
        expires_at = _expiry(keep, now)
        RuntimeInstance.objects.filter(pk=route.instance_id).update(
            in_flight=in_flight,
            last_request_at=now,
            keep_alive=keep,
            expires_at=expires_at,
        )
    installation_touch(model=instance.model, now=now)
    # keep_alive 0: unloaded once the last request in flight ended (another one, a stream
    # waiting its turn in the runner, would be cut off). It expired just now; its host's
    # supervisor, woken, unloads it as it unloads every expired instance: one unload.
    # A shorter keep-alive than before also rings: the supervisor sleeps until the expiry
    # it last saw.
    earlier = expires_at is not None and (
        instance.expires_at is None or expires_at < instance.expires_at
    )
    if in_flight == 0 and (keep == 0 or earlier):
        transaction.on_commit(lambda: runtime_host_ring(host=instance.host))
    runtime_publish()
