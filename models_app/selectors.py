"""Reads. One query path feeds the API, the admin, the HTMX page and the CLI."""

from __future__ import annotations

from functools import cache
from typing import Literal

from django.conf import settings
from django.db.models import (
    BooleanField,
    Case,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, RowNumber

from . import store
from .errors import NotFound
from .models import (
    ACTIVE_STATES,
    ActiveModel,
    Installation,
    Model,
    Operation,
    StoreScan,
    UnmanagedRepo,
)

StatusFilter = Literal["all", "installed", "available"]
SortKey = Literal[
    "name", "-name", "type", "-type", "size", "-size", "params", "-params", "recommended",
    "installed", "-installed", "updated", "-updated",
]  # fmt: skip

SORTS = {
    "name": ["name", "key"],
    "type": ["type", "name", "key"],
    "size": [F("download_size").asc(nulls_last=True), "key"],
    "params": [F("parameter_count").asc(nulls_last=True), "key"],
    "recommended": ["-recommended", "type", "name", "key"],
    "installed": [F("installation__installed_at").asc(nulls_last=True), "key"],
    "updated": ["updated_at", "key"],
}


def _descending(order: list) -> list:
    flipped = []
    for item in order:
        if isinstance(item, str):
            flipped.append(item[1:] if item.startswith("-") else f"-{item}")
        else:
            flipped.append(F(item.expression.name).desc(nulls_last=True))
    return flipped


def collections_count_subquery():
    """Return an expression counting the collections that use the outer model in any role.

    One indexed count per foreign key: an OR across the three columns would scan the
    whole collections table for every model. A model has one type, so it fills at
    most one role and the sum counts each collection once.
    """
    from collections_app.models import Collection

    def count_by(field: str):
        using = (
            Collection.objects.filter(**{field: OuterRef("pk")})
            .order_by()
            .values(field)
            .annotate(n=Func(F("id"), function="COUNT"))
            .values("n")
        )
        return Coalesce(Subquery(using, output_field=IntegerField()), Value(0))

    return count_by("embedding_model") + count_by("reranker_model") + count_by("splade_model")


def model_queryset() -> QuerySet[Model]:
    """Return models with their install state, active flag and usage count, in one query."""
    return Model.objects.select_related("installation").annotate(
        collections_count=collections_count_subquery(),
        is_active=Exists(ActiveModel.objects.filter(model=OuterRef("pk"))),
    )


def model_list(
    *,
    type: str | None = None,
    status: StatusFilter = "all",
    search: str | None = None,
    recommended: bool | None = None,
    sort: SortKey = "name",
) -> QuerySet[Model]:
    """Return the filtered, sorted models, without the per-row columns.

    Counting and paging need none of them; `model_page` and `model_objects_page` add
    them for the rows of one page.
    """
    qs = Model.objects.all()
    if type:
        qs = qs.filter(type=type)
    if status == "installed":
        qs = qs.filter(installation__isnull=False)
    elif status == "available":
        qs = qs.filter(installation__isnull=True)
    if recommended is not None:
        qs = qs.filter(recommended=recommended)
    if search:
        for word in search.split():
            qs = qs.filter(
                Q(name__icontains=word)
                | Q(key__icontains=word)
                | Q(repo_id__icontains=word)
                | Q(family__icontains=word)
                | Q(description__icontains=word)
            )
    base = sort.lstrip("-")
    order = SORTS[base]
    return qs.order_by(*(_descending(order) if sort.startswith("-") else order))


LIST_FIELDS = (
    "key", "repo_id", "revision", "type", "name", "description", "family", "parameter_count",
    "quantization", "download_size", "recommended", "tags", "source", "in_registry",
)  # fmt: skip


@cache
def _page_rows() -> QuerySet[Model]:
    """Return the annotated values query of list rows, built once per process.

    Resolving the usage subqueries costs more than running them; every page filters
    a clone of this one (a queryset is never evaluated in place, so it holds no rows).
    """
    return Model.objects.annotate(
        collections_count=collections_count_subquery(),
        is_active=Exists(ActiveModel.objects.filter(model=OuterRef("pk"))),
        installed=ExpressionWrapper(Q(installation__id__isnull=False), output_field=BooleanField()),
        size_on_disk=F("installation__size_on_disk"),
    ).values("id", *LIST_FIELDS, "collections_count", "is_active", "installed", "size_on_disk")


def _page_ids(qs: QuerySet[Model], offset: int, limit: int) -> list[int]:
    return list(qs.values_list("id", flat=True)[offset : offset + limit])


def model_page(qs: QuerySet[Model], *, offset: int, limit: int) -> list[dict]:
    """Return one page of `model_list` as dicts, in its order.

    The page's ids are found first, so the per-row usage and install columns are
    computed for the page only, not for every row the sort has to look at.
    """
    ids = _page_ids(qs, offset, limit)
    by_id = {row["id"]: row for row in _page_rows().filter(id__in=ids)}
    return [by_id[i] for i in ids]


def model_objects_page(qs: QuerySet[Model], *, offset: int, limit: int) -> list[Model]:
    """Return one page of `model_list` as `model_queryset` objects, in its order."""
    ids = _page_ids(qs, offset, limit)
    by_id = {m.id: m for m in model_queryset().filter(id__in=ids)}
    return [by_id[i] for i in ids]


def model_get(*, key: str) -> Model:
    """Return one model with the list's annotations, or raise NotFound."""
    try:
        return model_queryset().get(key=key)
    except Model.DoesNotExist:
        raise NotFound(f"No model with key {key!r}.", details={"model": key}) from None


def memory_table(model: Model) -> list[dict]:
    """Return the memory estimate rows of a model, smallest first."""
    rows = [
        {"quantization": quant, "bytes": size}
        for quant, size in (model.memory_estimates or {}).items()
        if size is not None
    ]
    return sorted(rows, key=lambda r: r["bytes"])


def active_model_list() -> list[ActiveModel]:
    return list(ActiveModel.objects.select_related("model").order_by("type"))


def latest_scan() -> StoreScan | None:
    return StoreScan.objects.order_by("-scanned_at", "-id").first()


def cache_summary() -> dict:
    """Return the store figures from the last reconcile plus the free disk right now.

    Free disk is one statvfs call; nothing here walks the store.
    """
    scan = latest_scan()
    total_disk, free_disk = store.disk_usage(settings.MODELS_HUB_DIR)
    installed = Installation.objects.all()
    return {
        "store_path": str(settings.MODELS_HUB_DIR),
        "scanned_at": scan.scanned_at if scan else None,
        "total_bytes": scan.total_bytes if scan else 0,
        "managed_bytes": scan.managed_bytes if scan else 0,
        "unmanaged_bytes": scan.unmanaged_bytes if scan else 0,
        "unmanaged_count": scan.unmanaged_count if scan else 0,
        "partial_bytes": scan.partial_bytes if scan else 0,
        "partial_count": len(scan.partial_files) if scan else 0,
        "installed_count": installed.count(),
        "free_disk_bytes": free_disk,
        "disk_total_bytes": total_disk,
        "warnings": scan.warnings if scan else [],
        "unmanaged_repos": list(UnmanagedRepo.objects.all()),
        "quota_bytes": settings.MODELS_MAX_BYTES,
        "quota_remaining_bytes": (
            settings.MODELS_MAX_BYTES - (scan.total_bytes if scan else 0)
            if settings.MODELS_MAX_BYTES
            else None
        ),
        "min_free_bytes": settings.MIN_FREE_BYTES,
    }


def operation_list(
    *, state: str | None = None, model: str | None = None, kind: str | None = None
) -> QuerySet[Operation]:
    """Return operations newest first; state "active" means queued or running."""
    qs = Operation.objects.select_related("model").order_by("-created_at", "-id")
    if state == "active":
        qs = qs.filter(state__in=ACTIVE_STATES)
    elif state:
        qs = qs.filter(state=state)
    if model:
        qs = qs.filter(model__key=model)
    if kind:
        qs = qs.filter(kind=kind)
    return qs


def operation_get(*, operation_id: int) -> Operation:
    try:
        return Operation.objects.select_related("model").get(pk=operation_id)
    except Operation.DoesNotExist:
        raise NotFound(
            f"No operation #{operation_id}.", details={"operation": operation_id}
        ) from None


def default_embedding_matches(model: Model) -> bool:
    """Return True if DEFAULT_EMBEDDING_MODEL names this model (by key or repo id)."""
    wanted = settings.DEFAULT_EMBEDDING_MODEL
    return model.type == "embedding" and wanted in (model.key, model.repo_id)


def repo_stakeholders(model: Model) -> list[list[str]]:
    """Return the file patterns of other entries of the same repo that are installed or busy."""
    others = (
        Model.objects.filter(repo_id=model.repo_id)
        .exclude(pk=model.pk)
        .filter(Q(installation__location="primary") | Q(operations__state__in=ACTIVE_STATES))
        .distinct()
    )
    return [m.file_patterns for m in others]


def model_usage(*, model: Model) -> dict:
    """Return the usage preflight of deleting a model: what blocks it, what it warns of.

    It reads the model's repo folder to count the bytes a delete would really free;
    nothing else here touches the disk.
    """
    from collections_app.models import Collection, LLMConfig, UserPreference

    installation = Installation.objects.filter(model=model).first()
    collections = list(
        Collection.objects.filter(
            Q(embedding_model=model) | Q(reranker_model=model) | Q(splade_model=model)
        )
        .order_by("name")
        .values_list("name", flat=True)
    )
    prefs = UserPreference.objects.filter(
        Q(default_embedding_model=model) | Q(default_llm=model) | Q(default_reranker=model)
    ).count()
    llm_configs = list(LLMConfig.objects.filter(model=model).values_list("name", flat=True))
    is_default = default_embedding_matches(model)
    is_active = ActiveModel.objects.filter(model=model).exists()
    loaded = False  # the runtime arrives with the LLM runtime issue

    bytes_freed = partial_bytes = 0
    in_primary = installation is not None and installation.location == "primary"
    if in_primary:
        removal = store.plan_removal(
            settings.MODELS_HUB_DIR, model.repo_id, model.file_patterns, repo_stakeholders(model)
        )
        bytes_freed, partial_bytes = removal.bytes_freed, removal.partial_bytes

    warnings = []
    if prefs:
        warnings.append(
            f"{prefs} user preference{'s use' if prefs != 1 else ' uses'} this model; "
            "they will be reset to the defaults."
        )
    if llm_configs:
        warnings.append(
            f"LLM config {', '.join(llm_configs)} "
            f"{'use' if len(llm_configs) != 1 else 'uses'} this model; it will be cleared."
        )
    if is_default:
        warnings.append(
            "This is the default embedding model (DEFAULT_EMBEDDING_MODEL); whatever relies "
            "on the default will need it downloaded again."
        )
    if is_active:
        warnings.append(f"This is the active {model.type} model; the active slot will be cleared.")
    if loaded:
        warnings.append("This model is loaded in the runtime; it will be unloaded first.")
    blocked = bool(collections)
    return {
        "model": model.key,
        "installed": installation is not None,
        "location": installation.location if installation else None,
        "size_on_disk": installation.size_on_disk if installation else 0,
        "bytes_freed": bytes_freed,
        "partial_bytes": partial_bytes,
        "blocked_by_collections": collections,
        "user_preferences_count": prefs,
        "llm_config_count": len(llm_configs),
        "llm_configs": llm_configs,
        "is_default_embedding_model": is_default,
        "is_active": is_active,
        "loaded_in_runtime": loaded,
        "warnings": warnings,
        "can_delete": in_primary and not blocked,
        "requires_confirmation": bool(warnings),
    }


def busy_model_ids(model_ids) -> set[int]:
    """Return which of these models have a queued or running operation."""
    return set(
        Operation.objects.filter(model_id__in=set(model_ids), state__in=ACTIVE_STATES)
        .values_list("model_id", flat=True)
        .distinct()
    )


def active_operation_blobs() -> set[str]:
    """Return the blob ids that queued or running operations will write."""
    return {
        f["blob_id"]
        for plan in Operation.objects.filter(state__in=ACTIVE_STATES).values_list("plan", flat=True)
        for f in plan or []
        if isinstance(f, dict) and "blob_id" in f
    }


def unmanaged_get(*, repo_pk: int) -> UnmanagedRepo:
    try:
        return UnmanagedRepo.objects.get(pk=repo_pk)
    except UnmanagedRepo.DoesNotExist:
        raise NotFound(f"No unmanaged repo #{repo_pk}.", details={"repo": repo_pk}) from None


def collection_names_by_model(*, model_ids: list[int]) -> dict[int, list[str]]:
    """Return the names of the collections using each model, by model id, in one query."""
    from collections_app.models import Collection

    names: dict[int, list[str]] = {}
    if not model_ids:
        return names
    rows = (
        Collection.objects.filter(
            Q(embedding_model_id__in=model_ids)
            | Q(reranker_model_id__in=model_ids)
            | Q(splade_model_id__in=model_ids)
        )
        .order_by("name")
        .values_list("name", "embedding_model_id", "reranker_model_id", "splade_model_id")
    )
    wanted = set(model_ids)
    for name, *used in rows:
        for model_id in {m for m in used if m in wanted}:
            names.setdefault(model_id, []).append(name)
    return names


def current_operations_by_model(*, model_ids: list[int]) -> dict[int, Operation]:
    """Return each model's active operation, else its latest one, by model id, in one query."""
    if not model_ids:
        return {}
    active_first = Case(
        When(state__in=ACTIVE_STATES, then=Value(0)), default=Value(1), output_field=IntegerField()
    )
    ranked = (
        Operation.objects.filter(model_id__in=model_ids)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("model_id")],
                order_by=[active_first.asc(), F("created_at").desc(), F("id").desc()],
            )
        )
        .filter(rank=1)
    )
    return {op.model_id: op for op in ranked}
