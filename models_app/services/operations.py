"""Operations: start, begin, cancel, retry, claim, finish; the reapers and the requeue sweep.

Every state change is one call here that writes the row (guarded by the state it
expects, with the row count checked) and publishes it; cancel is services/cancellation.py.
What an operation does is its kind's executor (models_app/executors.py); running one is
services/execution.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from ..errors import AlreadyRunning, InvalidState, ModelyardError
from ..models import (
    ACTIVE_STATES,
    RUNTIME_KINDS,
    EventKind,
    Model,
    Operation,
    OperationKind,
    OperationState,
)
from ..phrasing import with_article
from ..store import get_store
from .events import event_record, operation_publish
from .progress import write_retried

logger = logging.getLogger(__name__)

RETRYABLE_STATES = (OperationState.FAILED, OperationState.CANCELLED, OperationState.INTERRUPTED)


@dataclass(frozen=True)
class StartResult:
    """What a start did: queued a new operation, found the active one, or had nothing to do.

    The one mapping from a start to what interfaces show: the API's status and HTTP code,
    the page's toast and the admin's message all come from here.
    """

    operation: Operation | None
    created: bool
    message: str  # for the API and the CLI: names the model by key
    # "queued", "active", or what made it unnecessary ("installed", "not_installed", ...)
    status: str = ""

    def __post_init__(self):
        if not self.status:
            object.__setattr__(self, "status", "queued" if self.created else "active")

    @property
    def http_status(self) -> int:
        return 202 if self.created else 200

    @property
    def level(self) -> str:
        return "success" if self.created else "info"

    def toast(self, label: str) -> tuple[str, str]:
        """Return (level, text) naming the target by `label` (a model's display name)."""
        if self.created:
            return self.level, f"{self.operation.get_kind_display()} of {label} queued."
        if self.operation is not None:
            return self.level, f"{label}: {self.message}"
        return self.level, NOTHING_TO_DO.get(self.status, "{label}: {message}").format(
            label=label, message=self.message
        )


NOTHING_TO_DO = {
    "installed": "{label} is already installed.",
    "not_installed": "{label} is not installed; there is nothing to delete.",
    "nothing_to_prune": "{message}",
}


def _enqueue(operation_id: int) -> None:
    from django_q.tasks import async_task

    try:
        task_id = async_task(
            "models_app.tasks.run_operation",
            operation_id,
            task_name=f"operation-{operation_id}",
            timeout=settings.Q_TASK_TIMEOUT,
        )
    except Exception:
        # The broker is away (Redis restarting). The operation is queued all the same: the
        # sweep for lost tasks (operations_requeue) enqueues it once the broker is back,
        # and the request that queued it gets its answer, not a 500 for a committed row.
        logger.warning(
            "could not enqueue operation %s; the requeue sweep will", operation_id, exc_info=True
        )
        return
    Operation.objects.filter(pk=operation_id).update(task_id=task_id or "", updated_at=Now())


def _waiting_task_ids(broker=None) -> set[str] | None:
    """Return the ids of the tasks waiting in django-q2's broker; None if it cannot be read.

    Redis holds one list of signed task packages; the ORM broker one OrmQ row per task
    (a locked row too: a cluster took it and runs it, or hands it on when the lock ends).
    """
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.brokers.redis_broker import Redis
    from django_q.signing import SignedPackage

    broker = broker or get_broker()
    if isinstance(broker, ORM):
        return {row.task_id() for row in broker.get_connection().filter(key=broker.list_key)}
    if isinstance(broker, Redis):
        ids = set()
        for package in broker.connection.lrange(broker.list_key, 0, -1):
            try:
                ids.add(SignedPackage.loads(package)["id"])
            except Exception:  # not a task of ours (another signing key): not our concern
                continue
        return ids
    return None


def operation_conflict(active: Operation, *, doing: str) -> AlreadyRunning:
    """Return the 409 naming the active operation that keeps `doing` ("a delete") from starting.

    The details name it (id, kind, state) for clients; a download's says how to stop it.
    """
    message = (
        f"{active.target} already has {with_article(active.kind)} operation #{active.id} "
        f"({active.state}); {doing} cannot start until it ends."
    )
    if active.kind == OperationKind.DOWNLOAD:
        message += " Cancel it first (with discard_partial to remove its partial files too)."
    return AlreadyRunning(
        message, details={"operation": active.id, "kind": active.kind, "state": active.state}
    )


def _conflict(active: Operation, kind: str) -> AlreadyRunning:
    return operation_conflict(active, doing=with_article(kind))


def operation_exclusion_check(
    *, model: Model, kind: str, doing: str | None = None, conflicting=None
) -> Operation | None:
    """Return the model's active operation if it is of `kind`; if it is of another kind, raise
    AlreadyRunning naming it (only for the kinds in `conflicting`, when given).

    For what must not begin while the model is busy but is not itself an operation of
    that kind yet (the delete dialog; activating a model that is being deleted).
    """
    active = _active_on(model=model, kind=kind)
    if active is None or active.kind == kind:
        return active
    if conflicting is not None and active.kind not in conflicting:
        return None
    raise operation_conflict(active, doing=doing or with_article(kind))


def operation_start(
    *,
    kind: str,
    model: Model | None = None,
    user=None,
    plan=None,
    unless=None,
    host: str = "",
) -> StartResult:
    """Queue an operation unless one is active on its target; the same kind returns that one.

    The target is a model, or the whole store when `model` is None (prune). `unless` is
    checked with the target locked: it returns a StartResult when there is nothing to do
    (the model is installed already). The conditional unique constraints are the
    guarantee; the lock only saves the losers of a race an IntegrityError.

    A runtime kind (load, unload) is not enqueued: the runtime supervisor of `host`
    claims it (`worker_host` names that host until then).
    """
    runtime = kind in RUNTIME_KINDS
    if runtime and not host:
        raise ValueError(f"{kind} operations run on a host's runtime: give the host.")
    try:
        with transaction.atomic():
            if model is not None:
                Model.objects.select_for_update().filter(pk=model.pk).first()
            active = _active_on(model=model, kind=kind)
            if active is not None:
                return _same_kind_or_conflict(active, kind)
            if unless is not None and (nothing := unless()) is not None:
                return nothing
            op = Operation.objects.create(
                model=model,
                kind=kind,
                plan=plan if plan is not None else [],
                created_by=user if _is_user(user) else None,
                worker_host=host if runtime else "",
            )
            if not runtime:
                transaction.on_commit(lambda: _enqueue(op.id))
    except IntegrityError:
        # Another request won the race between our read and our insert.
        active = _active_on(model=model, kind=kind)
        if active is None:
            raise
        return _same_kind_or_conflict(active, kind)
    op.model = model
    operation_publish(op)
    return StartResult(op, True, f"{kind.title()} of {op.target} queued.")


def operation_begin(
    *,
    kind: str,
    model: Model | None = None,
    parent: Operation | None = None,
    user=None,
    plan=None,
) -> Operation:
    """Create an operation already running in this process, to be executed here and now.

    For a delete that is part of a prune (`parent`), or a command that runs its work in
    the foreground. It is never enqueued, so it runs exactly once: here; if this process
    dies, its heartbeat goes stale and the reaper marks it interrupted. Raise
    AlreadyRunning (naming the other operation) when its target is busy.
    """
    now = timezone.now()
    part_of = f" (part of {parent.kind} #{parent.pk})" if parent is not None else ""
    try:
        with transaction.atomic():
            op = Operation.objects.create(
                model=model,
                kind=kind,
                parent=parent,
                plan=plan if plan is not None else [],
                state=OperationState.RUNNING,
                started_at=now,
                heartbeat_at=now,
                attempts=1,
                task_id=parent.task_id if parent is not None else "",
                **_this_process(),
                created_by=user if _is_user(user) else None,
            )
            event_record(
                kind=EventKind.STARTED,
                message=f"{op.get_kind_display()} of {op.target} started{part_of}.",
                model=model,
                operation=op,
                actor=user,
                parent=parent.pk if parent is not None else None,
            )
    except IntegrityError:
        active = _active_on(model=model, kind=kind)
        if active is None:
            raise
        raise _conflict(active, kind) from None
    op.model = model
    operation_publish(op)
    return op


def _same_kind_or_conflict(active: Operation, kind: str) -> StartResult:
    """Return the active operation as the answer to a start of its kind; else refuse."""
    if active.kind == kind:
        return StartResult(active, False, f"{kind.title()} already {active.state}.")
    raise _conflict(active, kind)


def _active_on(*, model: Model | None, kind: str) -> Operation | None:
    """Return the active operation on a model, or the active store-wide one of this kind."""
    qs = Operation.objects.select_related("model").filter(state__in=ACTIVE_STATES)
    if model is not None:
        return qs.filter(model=model).first()
    return qs.filter(model__isnull=True, kind=kind).first()


def operation_retry(*, operation: Operation, user=None) -> Operation:
    """Queue a failed, cancelled or interrupted operation again; it resumes from its partials."""
    if operation.kind in RUNTIME_KINDS:
        raise InvalidState(
            f"{with_article(operation.kind).capitalize()} is not retried: "
            f"{operation.kind} the model again.",
            details={"operation": operation.id, "kind": operation.kind},
        )
    try:
        with transaction.atomic():
            updated = Operation.objects.filter(pk=operation.pk, state__in=RETRYABLE_STATES).update(
                state=OperationState.QUEUED,
                cancel_requested=False,
                discard_partial=False,
                error_code="",
                error_message="",
                finished_at=None,
                speed=None,
                eta_seconds=None,
                updated_at=Now(),
            )
            if not updated:
                op = Operation.objects.get(pk=operation.pk)
                raise InvalidState(
                    f"Operation #{op.id} is {op.state}; only failed, cancelled or "
                    "interrupted operations can be retried.",
                    details={"operation": op.id, "state": op.state},
                )
            transaction.on_commit(lambda: _enqueue(operation.pk))
    except IntegrityError:
        active = _active_on(model=operation.model, kind=operation.kind)
        raise _conflict(active, operation.kind) from None
    op = Operation.objects.select_related("model").get(pk=operation.pk)
    event_record(
        kind=EventKind.STARTED,
        message=f"{op.kind.title()} of {op.target} queued again (retry).",
        model=op.model,
        operation=op,
        actor=user,
        retry=True,
    )
    operation_publish(op)
    return op


def operation_claim(*, operation_id: int) -> Operation | None:
    """Move a queued operation to running for this worker; None if someone else has it."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Operation.objects.filter(pk=operation_id, state=OperationState.QUEUED).update(
            state=OperationState.RUNNING,
            started_at=now,
            heartbeat_at=now,
            bytes_done=0,
            attempts=F("attempts") + 1,
            updated_at=Now(),
            **_this_process(),
        )
        if not claimed:
            return None
        op = Operation.objects.select_related("model").get(pk=operation_id)
        event_record(
            kind=EventKind.STARTED,
            message=f"{op.kind.title()} of {op.target} started.",
            model=op.model,
            operation=op,
        )
    operation_publish(op)
    return op


def operation_finish(
    *,
    operation: Operation,
    state: str,
    error: ModelyardError | None = None,
    result: dict | None = None,
) -> bool:
    """End a running operation; False if it was no longer running (reaped or finished).

    `result` (the executor's figures) goes on the row and its event. The error's message
    is made public first: no token, no absolute path (`public_message`).
    """
    values = {
        "state": state,
        "finished_at": timezone.now(),
        "eta_seconds": None,
        "updated_at": Now(),
        "result": result or {},
    }
    message_tail = ""
    if error is not None:
        message_tail = public_message(error.message)
        values |= {"error_code": error.code, "error_message": message_tail}
    if state == OperationState.SUCCEEDED:
        values["eta_seconds"] = 0
    kind = {
        OperationState.SUCCEEDED: EventKind.COMPLETED,
        OperationState.FAILED: EventKind.FAILED,
        OperationState.CANCELLED: EventKind.CANCELLED,
    }[state]
    verb = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}[state]

    # The end state and its event commit together: no reader sees one without the other.
    # A transaction of its own, so a connection lost to a database restart runs it again.
    def end() -> Operation | None:
        with transaction.atomic():
            ended = Operation.objects.filter(pk=operation.pk, state=OperationState.RUNNING).update(
                **values
            )
            if not ended:
                return None
            op = Operation.objects.select_related("model").get(pk=operation.pk)
            message = f"{op.kind.title()} of {op.target} {verb}"
            if message_tail:
                message += f": {message_tail}"
            event_record(
                kind=kind,
                message=message + ("" if message.endswith(".") else "."),
                model=op.model,
                operation=op,
                error_code=error.code if error else "",
                # An error's details may hold any key ("model"); the row keeps them, not the
                # event.
                **((result or {}) if state == OperationState.SUCCEEDED else {}),
            )
        return op

    op = write_retried(end, what=f"the end of operation {operation.pk}")
    if op is None:
        return False
    operation_publish(op)
    return True


def operation_fail_queued(*, operation: Operation, error: ModelyardError) -> bool:
    """End a queued operation that nothing will run as failed; False if it was claimed."""
    message = public_message(error.message)
    with transaction.atomic():
        if not Operation.objects.filter(pk=operation.pk, state=OperationState.QUEUED).update(
            state=OperationState.FAILED,
            finished_at=timezone.now(),
            error_code=error.code,
            error_message=message,
            updated_at=Now(),
        ):
            return False
        op = Operation.objects.select_related("model").get(pk=operation.pk)
        event_record(
            kind=EventKind.FAILED,
            message=f"{op.kind.title()} of {op.target} failed: {message}",
            model=op.model,
            operation=op,
            error_code=error.code,
        )
    operation_publish(op)
    return True


def public_message(text: str) -> str:
    """Return an error message fit for clients: the hub token and server paths taken out."""
    if settings.HF_TOKEN:
        text = text.replace(settings.HF_TOKEN, "[token]")
    return get_store().redact(text)


def operations_reap(*, now=None) -> list[int]:
    """Mark running operations whose heartbeat went stale as interrupted; return their ids.

    Cheap (the state + heartbeat index): the supervisor of `manage.py run` calls it every
    few seconds, the schedule once a minute, and every worker when it starts.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.OPERATION_HEARTBEAT_STALE)
    stale = Q(heartbeat_at__lt=cutoff)
    ids = Operation.objects.filter(stale, state=OperationState.RUNNING).values_list("id", flat=True)
    return [
        op_id
        for op_id in ids
        if _interrupt(
            op_id,
            # Re-checked in the UPDATE: a heartbeat may have arrived since the read.
            still=stale,
            now=now,
            message=(
                "The worker stopped sending heartbeats (it died or lost the database). "
                "Retry resumes from the partial files."
            ),
            event=lambda op: f"no heartbeat since {op.heartbeat_at:%H:%M:%S}",
        )
    ]


def operations_interrupt_owned(
    *,
    host: str,
    pids: Collection[int],
    kinds: Collection[str] | None = None,
    reason: str,
    resumable: bool = True,
) -> list[int]:
    """Mark the running operations of these processes on `host` interrupted; return their ids.

    For a supervisor that saw them die (or is stopping them): no need to wait for their
    heartbeat to go stale. `kinds` limits it (a stop interrupts only what resumes).
    A worker that is still alive finds its row no longer running at its next progress
    write and stops (LostOwnership) without writing again.
    """
    if not pids:
        return []
    owned = Q(worker_host=host, worker_pid__in=list(pids))
    if kinds is not None:
        owned &= Q(kind__in=list(kinds))
    ids = Operation.objects.filter(owned, state=OperationState.RUNNING).values_list("id", flat=True)
    now = timezone.now()
    return [
        op_id
        for op_id in ids
        if _interrupt(
            op_id,
            still=owned,
            now=now,
            message=f"{reason} Retry resumes from the partial files." if resumable else reason,
            event=lambda op: reason[:1].lower() + reason[1:].rstrip("."),
        )
    ]


def _interrupt(op_id: int, *, still: Q, now, message: str, event) -> bool:
    """End one running operation as interrupted if `still` holds; record and publish it."""
    # The state and its event commit together: no reader sees one without the other.
    with transaction.atomic():
        if not Operation.objects.filter(still, pk=op_id, state=OperationState.RUNNING).update(
            state=OperationState.INTERRUPTED,
            finished_at=now,
            speed=None,
            eta_seconds=None,
            updated_at=Now(),
            error_message=message,
        ):
            return False
        op = Operation.objects.select_related("model").get(pk=op_id)
        event_record(
            kind=EventKind.INTERRUPTED,
            message=f"{op.kind.title()} of {op.target} interrupted: {event(op)}.",
            model=op.model,
            operation=op,
        )
    operation_publish(op)
    return True


def host_name() -> str:
    """Return the name this host's processes are recorded under (operations, heartbeats)."""
    return settings.HOST_NAME


def _this_process() -> dict:
    return {"worker_host": host_name(), "worker_pid": os.getpid()}


def operations_requeue(*, now=None) -> list[int]:
    """Enqueue again the queued operations whose task the broker lost; return their ids.

    Redis keeps nothing across a restart; a task can also miss the broker (it was away
    when the operation was queued) or die with a cluster that had taken it from Redis
    and not begun it. Such an operation would stay queued for ever, and a new request
    for its model would only find it. One queued for less than OPERATION_HEARTBEAT_STALE
    is left alone (its task may be on its way). A second task for one operation is
    harmless: one worker claims the operation (operation_claim), the other skips it.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.OPERATION_HEARTBEAT_STALE)
    waiting = list(
        Operation.objects.filter(state=OperationState.QUEUED, updated_at__lt=cutoff)
        # A runtime kind was never in the broker: its host's runtime supervisor claims it.
        .exclude(kind__in=RUNTIME_KINDS)
        .order_by("created_at", "id")
        .values_list("id", "task_id")
    )
    if not waiting:
        return []
    in_broker = _waiting_task_ids()
    if in_broker is None:
        return []
    lost = [op_id for op_id, task_id in waiting if not task_id or task_id not in in_broker]
    for op_id in lost:
        logger.warning("operation %s is queued but its task is gone; enqueuing it again", op_id)
        _enqueue(op_id)
    return lost


def _is_user(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)
