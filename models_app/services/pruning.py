"""Prune: remove least-recently-used models until the store fits its quota and disk floor.

The plan is a read: it changes no row and no file. Carrying it out is an operation of
kind `prune` (its plan stored on the row, cancellable between deletes); each delete is an
operation of its own, made and run inside the prune, so it runs exactly once. A download
short of room with AUTO_PRUNE runs the same deletes inline (`prune_for_room`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import selectors
from ..errors import AlreadyRunning, Cancelled, ModelyardError
from ..executors import executor
from ..models import (
    ACTIVE_STATES,
    ActiveModel,
    Installation,
    Model,
    Operation,
    OperationKind,
    OperationState,
)
from ..store import get_store
from .deletion import delete_now
from .operations import StartResult, operation_start
from .progress import ProgressReporter, heartbeat_kept
from .reconcile import store_reconcile

logger = logging.getLogger(__name__)


@dataclass
class PruneItem:
    model: str
    name: str
    bytes: int
    last_used: str | None
    reason: str


@dataclass
class PrunePlan:
    total_bytes: int
    free_bytes: int
    quota: int | None
    min_free: int
    need_bytes: int
    removals: list[PruneItem] = field(default_factory=list)
    skipped: list[PruneItem] = field(default_factory=list)
    partial_files: list[str] = field(default_factory=list)
    enough: bool = True
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def bytes_to_free(self) -> int:
        return sum(item.bytes for item in self.removals)

    @property
    def has_work(self) -> bool:
        return bool(self.removals or self.partial_files)

    def as_dict(self) -> dict:
        return asdict(self) | {"bytes_to_free": self.bytes_to_free}

    @classmethod
    def from_dict(cls, data: dict) -> PrunePlan:
        data = {k: v for k, v in data.items() if k != "bytes_to_free"}
        items = {k: [PruneItem(**i) for i in data.pop(k, [])] for k in ("removals", "skipped")}
        return cls(**data, **items)


def _exemptions() -> dict[int, str]:
    """Return the installed models prune must never remove, with the reason."""
    from collections_app.models import Collection

    exempt: dict[int, str] = {}
    for model_id in Installation.objects.filter(pinned=True).values_list("model_id", flat=True):
        exempt[model_id] = "pinned"
    for embedding, reranker, splade, name in Collection.objects.values_list(
        "embedding_model_id", "reranker_model_id", "splade_model_id", "name"
    ):
        for model_id in (embedding, reranker, splade):
            if model_id:
                exempt.setdefault(model_id, f"used by collection {name}")
    for model_id, type_ in ActiveModel.objects.values_list("model_id", "type"):
        exempt.setdefault(model_id, f"the active {type_} model")
    # A model another operation holds: its delete would be refused (ERR_ALREADY_RUNNING).
    busy = Operation.objects.filter(model__isnull=False, state__in=ACTIVE_STATES)
    for model_id, kind, op_id, state in busy.values_list("model_id", "kind", "id", "state"):
        exempt.setdefault(model_id, f"busy: {kind} #{op_id} is {state}")
    # Loaded-in-runtime models join this list with the LLM runtime.
    return exempt


def _reason(inst: Installation) -> str:
    if inst.last_used_at:
        return f"least recently used (last used {inst.last_used_at:%Y-%m-%d %H:%M})"
    return f"least recently used (installed {inst.installed_at:%Y-%m-%d %H:%M}, never used)"


def prune_plan(*, need_bytes: int = 0, exclude_model_id: int | None = None) -> PrunePlan:
    """Decide what a prune removes, least recently used first, and why; change nothing.

    The figures are the last reconcile's (every operation reconciles what it touched)
    and the free disk now; nothing is rescanned and no row is written.
    """
    summary = selectors.cache_summary()
    quota, min_free = summary["quota_bytes"], summary["min_free_bytes"]
    over_quota = summary["total_bytes"] - quota if quota else 0
    below_floor = min_free - summary["free_disk_bytes"]
    plan = PrunePlan(
        total_bytes=summary["total_bytes"],
        free_bytes=summary["free_disk_bytes"],
        quota=quota,
        min_free=min_free,
        need_bytes=max(0, over_quota, below_floor, need_bytes),
    )
    plan.partial_files = _stale_partials(now=timezone.now())
    exempt = _exemptions()
    candidates = (
        Installation.objects.filter(location="primary")
        .select_related("model")
        .annotate(used=Coalesce(F("last_used_at"), F("installed_at")))
        .order_by("used", "model__key")
    )
    freed = 0
    for inst in candidates:
        last_used = inst.last_used_at.isoformat() if inst.last_used_at else None
        item = PruneItem(inst.model.key, inst.model.name, inst.size_on_disk, last_used, "")
        why_not = exempt.get(inst.model_id) or (
            "the model being downloaded" if inst.model_id == exclude_model_id else None
        )
        if why_not:
            item.reason = why_not
            plan.skipped.append(item)
            continue
        if freed >= plan.need_bytes:
            continue
        item.reason = _reason(inst)
        plan.removals.append(item)
        freed += inst.size_on_disk
    plan.enough = freed >= plan.need_bytes
    return plan


def prune_would_free(*, exclude_model_id: int | None = None) -> int:
    """Return the bytes a prune could free at most, exemptions respected."""
    exempt = set(_exemptions()) | ({exclude_model_id} if exclude_model_id else set())
    return sum(
        Installation.objects.filter(location="primary")
        .exclude(Q(model_id__in=exempt))
        .values_list("size_on_disk", flat=True)
    )


def prune_start(*, user=None) -> tuple[StartResult, PrunePlan]:
    """Plan a prune and queue it as an operation with that plan; return both.

    With nothing to remove no operation is made ("nothing_to_prune"); while a prune is
    queued or running, that one is returned.
    """
    plan = prune_plan()
    if not plan.has_work:
        why = "the store is within its quota and free-disk floor."
        return StartResult(None, False, f"Nothing to prune: {why}", "nothing_to_prune"), plan
    result = operation_start(kind=OperationKind.PRUNE, user=user, plan=plan.as_dict())
    if not result.created:
        plan = PrunePlan.from_dict(result.operation.plan)
    return result, plan


def _delete_each(
    plan: PrunePlan,
    *,
    parent: Operation,
    on_step: Callable[[int], None],
    cancelled: Callable[[], bool] = lambda: False,
) -> int:
    """Delete the plan's removals one by one as child operations; return the bytes freed.

    Each model's exemptions are read again first: pinned or put to use since the plan
    was made, it stays. `on_step` (given the bytes freed so far) runs between deletes
    and `cancelled` is asked there too.
    """
    freed = 0
    for item in plan.removals:
        if cancelled():
            raise Cancelled(
                f"Prune cancelled after {len(plan.removed)} of {len(plan.removals)} deletes.",
                details=_figures(plan, freed),
            )
        model = Model.objects.filter(key=item.model).first()
        if model is None:
            why_not = "no longer in the registry"
        elif not selectors.installed_in_store(model=model):
            why_not = "no longer installed"  # deleted meanwhile, or a retried prune's earlier run
        else:
            why_not = _exemptions().get(model.pk)
        if why_not:
            plan.failed.append(f"{item.model}: skipped ({why_not})")
            continue
        try:
            state = delete_now(model=model, parent=parent, user=parent.created_by)
        except AlreadyRunning as exc:
            plan.failed.append(f"{item.model}: {exc.message}")
            continue
        if state == OperationState.SUCCEEDED:
            plan.removed.append(item.model)
            freed += item.bytes
        else:
            plan.failed.append(item.model)
        on_step(freed)
    return freed


def _figures(plan: PrunePlan, freed: int) -> dict:
    return {
        "removed": plan.removed,
        "failed": plan.failed,
        "partial_files": plan.partial_files,
        "bytes_freed": freed,
    }


@executor(OperationKind.PRUNE, scope="store")
def prune_execute(op: Operation) -> dict:
    """Carry out the plan stored on the prune operation's row."""
    if not isinstance(op.plan, dict) or "removals" not in op.plan:
        raise ModelyardError(f"Prune #{op.pk} has no plan on its row.")
    plan = PrunePlan.from_dict(op.plan)
    op.bytes_total = plan.bytes_to_free
    Operation.objects.filter(pk=op.pk).update(bytes_total=op.bytes_total)
    reporter = ProgressReporter(op)
    reporter.tick(0, force=True)
    plan.partial_files = partials_cleanup(publish=False)
    with heartbeat_kept(op):
        freed = _delete_each(
            plan,
            parent=op,
            on_step=lambda freed: reporter.tick(freed, force=True),
            cancelled=lambda: reporter.cancel_requested,
        )
    return _figures(plan, freed)


def prune_for_room(*, need_bytes: int, parent: Operation, on_step: Callable[[], None]) -> int:
    """Free at least `need_bytes` for a download short of room (AUTO_PRUNE); return bytes freed.

    The deletes are children of the download. The download's heartbeat is kept fresh
    from a thread while they run, and `on_step` ticks its reporter between them.
    """
    plan = prune_plan(need_bytes=need_bytes, exclude_model_id=parent.model_id)
    with heartbeat_kept(parent):
        freed = _delete_each(plan, parent=parent, on_step=lambda _freed: on_step())
    logger.info(
        "auto-prune for %s freed %d bytes (%s)", parent.target, freed, ", ".join(plan.removed)
    )
    return freed


def _stale_partials(*, now) -> list[str]:
    """Return the partial files older than PARTIAL_MAX_AGE that no active operation resumes."""
    return get_store().stale_partials(
        older_than=now - timedelta(seconds=settings.PARTIAL_MAX_AGE),
        keep=selectors.active_operation_blobs(),
    )


def partials_cleanup(*, now=None, publish: bool = True) -> list[str]:
    """Remove partial files older than PARTIAL_MAX_AGE that no active operation will resume.

    The folders they were in are reconciled, so the cache figures stop counting them.
    """
    now = now or timezone.now()
    removed = get_store().partials_remove(_stale_partials(now=now))
    if removed:
        logger.info("removed %d stale partial files", len(removed))
        store_reconcile(
            folders=sorted({name.split("/", 1)[0] for name in removed}), publish=publish
        )
    return removed
