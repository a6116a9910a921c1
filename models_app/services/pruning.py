"""Prune: remove least-recently-used models until the store fits its quota and disk floor."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import selectors, store
from ..models import ActiveModel, Installation, OperationKind
from .execution import operation_run
from .installed import store_reconcile
from .operations import operation_start, partials_cleanup

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
    # Loaded-in-runtime models join this list with the LLM runtime.
    return exempt


def prune_plan(*, need_bytes: int = 0, exclude_model_id: int | None = None) -> PrunePlan:
    """Decide what a prune removes, least recently used first, and why; change nothing."""
    store_reconcile()
    summary = selectors.cache_summary()
    quota, min_free = settings.MODELS_MAX_BYTES, settings.MIN_FREE_BYTES
    over_quota = summary["total_bytes"] - quota if quota else 0
    below_floor = min_free - summary["free_disk_bytes"]
    plan = PrunePlan(
        total_bytes=summary["total_bytes"],
        free_bytes=summary["free_disk_bytes"],
        quota=quota,
        min_free=min_free,
        need_bytes=max(0, over_quota, below_floor, need_bytes),
    )
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.PARTIAL_MAX_AGE)
    active_blobs = selectors.active_operation_blobs()
    plan.partial_files = [
        str(p.relative_to(settings.MODELS_HUB_DIR))
        for p in store.stale_partials(settings.MODELS_HUB_DIR, older_than=cutoff, keep=active_blobs)
    ]
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
        item.reason = (
            f"least recently used (last used {inst.last_used_at:%Y-%m-%d %H:%M})"
            if inst.last_used_at
            else f"least recently used (never used since {inst.installed_at:%Y-%m-%d %H:%M})"
        )
        plan.removals.append(item)
        freed += inst.size_on_disk
    plan.enough = freed >= plan.need_bytes
    return plan


def prune_run(*, dry_run: bool, need_bytes: int = 0, exclude_model_id=None, user=None):
    """Make the plan and, unless a dry run, delete each model through a delete operation."""
    from ..models import Model

    plan = prune_plan(need_bytes=need_bytes, exclude_model_id=exclude_model_id)
    if dry_run:
        return plan
    plan.partial_files = partials_cleanup()
    for item in plan.removals:
        model = Model.objects.get(key=item.model)
        result = operation_start(model=model, kind=OperationKind.DELETE, user=user)
        if not result.created:
            plan.failed.append(f"{item.model}: {result.message}")
            continue
        state = operation_run(operation_id=result.operation.id)
        (plan.removed if state == "succeeded" else plan.failed).append(item.model)
    return plan


def prune_would_free(*, exclude_model_id: int | None = None) -> int:
    """Return the bytes a prune could free at most, exemptions respected."""
    exempt = set(_exemptions()) | ({exclude_model_id} if exclude_model_id else set())
    return sum(
        Installation.objects.filter(location="primary")
        .exclude(Q(model_id__in=exempt))
        .values_list("size_on_disk", flat=True)
    )
