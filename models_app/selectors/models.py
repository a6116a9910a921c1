"""Model reads: the list (filter, sort, page), one model, its memory table, the active models."""

from __future__ import annotations

from functools import cache
from typing import Literal

from django.db.models import (
    BooleanField,
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
)
from django.db.models.functions import Coalesce

from ..errors import NotFound
from ..models import ActiveModel, Model

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


def _usage_columns() -> dict:
    """Return the per-row annotations every model read carries: usage count, active flag."""
    return {
        "collections_count": collections_count_subquery(),
        "is_active": Exists(ActiveModel.objects.filter(model=OuterRef("pk"))),
    }


def model_queryset() -> QuerySet[Model]:
    """Return models with their install state, active flag and usage count, in one query."""
    return Model.objects.select_related("installation", "added_by").annotate(**_usage_columns())


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


# What selectors.fit.model_fit reads of a row, besides download_size.
FIT_FIELDS = ("gguf_file", "gguf_facts", "ram_required")


@cache
def _page_rows() -> QuerySet[Model]:
    """Return the annotated values query of list rows, built once per process.

    Resolving the usage subqueries costs more than running them; every page filters
    a clone of this one (a queryset is never evaluated in place, so it holds no rows).
    """
    return Model.objects.annotate(
        **_usage_columns(),
        installed=ExpressionWrapper(Q(installation__id__isnull=False), output_field=BooleanField()),
        size_on_disk=F("installation__size_on_disk"),
    ).values(
        "id", *LIST_FIELDS, "collections_count", "is_active", "installed", "size_on_disk",
        *FIT_FIELDS,
    )  # fmt: skip


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
