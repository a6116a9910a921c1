"""Usage reads: what uses a model, and the usage preflight of deleting it."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q

from ..models import (
    ACTIVE_STATES,
    LIVE_RUNTIME_STATES,
    ActiveModel,
    Installation,
    Model,
    RuntimeInstance,
)
from ..phrasing import type_label
from ..store import get_store


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

    It reads the model's own repo folder (and no other) to count the bytes a delete
    would really free; nothing else here touches the disk.
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
    loaded_on = list(
        RuntimeInstance.objects.filter(model=model, state__in=LIVE_RUNTIME_STATES).values_list(
            "host", flat=True
        )
    )
    loaded = bool(loaded_on)

    bytes_freed = partial_bytes = 0
    in_primary = installation is not None and installation.location == "primary"
    if in_primary:
        removal = get_store().plan_removal(
            model.repo_id, model.file_patterns, repo_stakeholders(model)
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
        warnings.append(
            f"This is the active {type_label(model.type)} model; the active slot will be cleared."
        )
    if loaded:
        warnings.append(
            f"This model is loaded in the runtime on {', '.join(loaded_on)}; the delete "
            "unloads it first."
        )
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
