"""Reads for collections, preferences and LLM configs; each list is one query."""

from __future__ import annotations

from collections.abc import Mapping

from django.db.models import QuerySet

from models_app.errors import NotFound
from models_app.models import Model

from .models import Collection, LLMConfig, UserPreference


def models_by_key(*, keys: Mapping[str, str | None]) -> dict[str, Model | None]:
    """Resolve registry keys by field name in one query; None stays None.

    Raise NotFound naming the first unknown key and the field that asked for it.
    """
    wanted = {key for key in keys.values() if key is not None}
    found = {m.key: m for m in Model.objects.filter(key__in=wanted)} if wanted else {}
    resolved: dict[str, Model | None] = {}
    for field, key in keys.items():
        if key is not None and key not in found:
            raise NotFound(
                f"No model with key {key!r} (for {field}).", details={"model": key, "field": field}
            )
        resolved[field] = found.get(key) if key is not None else None
    return resolved


def collection_queryset() -> QuerySet[Collection]:
    return Collection.objects.select_related(
        "owner", "embedding_model", "reranker_model", "splade_model"
    )


def collection_list() -> QuerySet[Collection]:
    """Return every collection with its owner and models, by name."""
    return collection_queryset().order_by("name", "id")


def collection_get(*, collection_id: int) -> Collection:
    try:
        return collection_queryset().get(pk=collection_id)
    except Collection.DoesNotExist:
        raise NotFound(
            f"No collection #{collection_id}.", details={"collection": collection_id}
        ) from None


def preference_get(*, user) -> UserPreference | None:
    """Return the user's saved preferences, or None when they never saved any."""
    return (
        UserPreference.objects.select_related(
            "default_embedding_model", "default_llm", "default_reranker"
        )
        .filter(user=user)
        .first()
    )


def llm_config_list() -> QuerySet[LLMConfig]:
    return LLMConfig.objects.select_related("model").order_by("name")


def llm_config_get(*, name: str) -> LLMConfig:
    try:
        return LLMConfig.objects.select_related("model").get(name=name)
    except LLMConfig.DoesNotExist:
        raise NotFound(f"No LLM config named {name!r}.", details={"llm_config": name}) from None
