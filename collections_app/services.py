"""Writes for collections, user preferences and LLM configs.

Every interface (API, admin, HTMX, CLI) calls these. Models arrive as `Model`
rows (the API resolves registry keys with `selectors.models_by_key`); each role
accepts one model type, and a model of another type is `Incompatible`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from models_app.errors import AlreadyExists, Incompatible, InvalidInput, NotFound
from models_app.models import Model, ModelType
from models_app.phrasing import type_label, with_article

from .models import Collection, LLMConfig, UserPreference


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""The default of an update argument: leave the field as it is (None clears it)."""

COLLECTION_ROLES = {
    "embedding_model": ModelType.EMBEDDING,
    "reranker_model": ModelType.RERANKER,
    "splade_model": ModelType.SPLADE,
}
PREFERENCE_ROLES = {
    "default_embedding_model": ModelType.EMBEDDING,
    "default_llm": ModelType.LLM,
    "default_reranker": ModelType.RERANKER,
}
NAME_MAX_LENGTH = Collection._meta.get_field("name").max_length
LLM_CONFIG_NAME_MAX_LENGTH = LLMConfig._meta.get_field("name").max_length


def _require_type(model: Model | None, *, field: str, expected: str) -> None:
    if model is not None and model.type != expected:
        raise Incompatible(
            f"{model.key} is {with_article(type_label(model.type))} model; {field} needs "
            f"{with_article(type_label(expected))} model.",
            details={
                "model": model.key,
                "model_type": model.type,
                "expected_type": expected,
                "field": field,
            },
        )


def _lock_models(models: Iterable[Model | None]) -> None:
    """Lock the model rows a write is about to reference; raise NotFound if one is gone.

    Call inside transaction.atomic(). Rows are locked in primary-key order so that
    two writers referencing the same models cannot deadlock each other.
    """
    wanted = {m.pk: m for m in models if m is not None}
    if not wanted:
        return
    locked = set(
        Model.objects.select_for_update()
        .filter(pk__in=sorted(wanted))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for pk, model in wanted.items():
        if pk not in locked:
            raise NotFound(
                f"Model {model.key} was deleted meanwhile.", details={"model": model.key}
            )


def _clean_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(
            f"A collection name must have 1 to {NAME_MAX_LENGTH} characters.",
            details={"field": "name"},
        )
    return name


def _duplicate_name(name: str) -> AlreadyExists:
    return AlreadyExists(
        f"A collection named {name!r} already exists.", details={"field": "name", "name": name}
    )


def collection_create(
    *,
    name: str,
    embedding_model: Model,
    description: str = "",
    reranker_model: Model | None = None,
    splade_model: Model | None = None,
    owner=None,
) -> Collection:
    """Create a collection built with an embedding model and optional reranker and SPLADE models."""
    name = _clean_name(name)
    if embedding_model is None:
        raise InvalidInput(
            "A collection needs an embedding model.", details={"field": "embedding_model"}
        )
    roles = {
        "embedding_model": embedding_model,
        "reranker_model": reranker_model,
        "splade_model": splade_model,
    }
    for field, model in roles.items():
        _require_type(model, field=field, expected=COLLECTION_ROLES[field])
    try:
        with transaction.atomic():
            # Lock the models before the insert: a delete checking usage between our
            # read and our insert would miss this collection. The model delete locks
            # the same rows, so it now either ran first (and we see NotFound) or waits
            # and then sees this collection.
            _lock_models(roles.values())
            return Collection.objects.create(
                name=name,
                description=description,
                owner=owner if _is_user(owner) else None,
                **roles,
            )
    except IntegrityError:
        if Collection.objects.filter(name=name).exists():
            raise _duplicate_name(name) from None
        raise


def collection_update(
    *,
    collection: Collection,
    name: str | _Unset = UNSET,
    description: str | _Unset = UNSET,
    embedding_model: Model | _Unset = UNSET,
    reranker_model: Model | _Unset | None = UNSET,
    splade_model: Model | _Unset | None = UNSET,
    owner=UNSET,
) -> Collection:
    """Change the given fields of a collection; fields left UNSET keep their value."""
    changes = {}
    if name is not UNSET:
        changes["name"] = _clean_name(name)
    if description is not UNSET:
        if description is None:
            raise InvalidInput("A description cannot be null.", details={"field": "description"})
        changes["description"] = description
    if owner is not UNSET:
        changes["owner"] = owner if _is_user(owner) else None
    if embedding_model is None:
        raise InvalidInput(
            "A collection needs an embedding model.", details={"field": "embedding_model"}
        )
    roles = {
        field: model
        for field, model in (
            ("embedding_model", embedding_model),
            ("reranker_model", reranker_model),
            ("splade_model", splade_model),
        )
        if model is not UNSET
    }
    for field, model in roles.items():
        _require_type(model, field=field, expected=COLLECTION_ROLES[field])
    changes.update(roles)
    if not changes:
        return collection
    try:
        with transaction.atomic():
            # Lock the newly referenced models before the write: a delete checking usage
            # between our read and our update would miss this collection.
            _lock_models(roles.values())
            for field, value in changes.items():
                setattr(collection, field, value)
            collection.save(update_fields=[*changes, "updated_at"])
    except IntegrityError:
        collection.refresh_from_db()
        if "name" in changes and (
            Collection.objects.filter(name=changes["name"]).exclude(pk=collection.pk).exists()
        ):
            raise _duplicate_name(changes["name"]) from None
        raise
    return collection


def collection_delete(*, collection: Collection) -> None:
    """Delete a collection; the models it used become deletable if nothing else uses them."""
    collection.delete()


def preference_set(
    *,
    user,
    default_embedding_model: Model | _Unset | None = UNSET,
    default_llm: Model | _Unset | None = UNSET,
    default_reranker: Model | _Unset | None = UNSET,
) -> UserPreference:
    """Set the user's default models; None clears one, UNSET leaves it as it is.

    No lock: a preference only warns before a model's deletion and is cleared by
    SET_NULL when the model goes.
    """
    changes = {
        field: model
        for field, model in (
            ("default_embedding_model", default_embedding_model),
            ("default_llm", default_llm),
            ("default_reranker", default_reranker),
        )
        if model is not UNSET
    }
    for field, model in changes.items():
        _require_type(model, field=field, expected=PREFERENCE_ROLES[field])
    preference, _ = UserPreference.objects.update_or_create(user=user, defaults=changes)
    return preference


def llm_config_set(
    *,
    name: str,
    description: str | _Unset = UNSET,
    model: Model | _Unset | None = UNSET,
) -> tuple[LLMConfig, bool]:
    """Create or update the named LLM config; return it and whether it was created.

    Fields left UNSET keep their value (a new config starts with no description
    and no model). No lock: a config only warns before its model's deletion.
    """
    name = _llm_config_name(name)
    changes = _llm_config_changes(description=description, model=model)
    return LLMConfig.objects.update_or_create(name=name, defaults=changes)


def _llm_config_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > LLM_CONFIG_NAME_MAX_LENGTH:
        raise InvalidInput(
            f"An LLM config name must have 1 to {LLM_CONFIG_NAME_MAX_LENGTH} characters.",
            details={"field": "name"},
        )
    return name


def _llm_config_changes(*, description, model) -> dict:
    """Return the checked description and model changes; UNSET ones are left out."""
    changes = {}
    if description is not UNSET:
        if description is None:
            raise InvalidInput("A description cannot be null.", details={"field": "description"})
        changes["description"] = description
    if model is not UNSET:
        _require_type(model, field="model", expected=ModelType.LLM)
        changes["model"] = model
    return changes


def llm_config_delete(*, config: LLMConfig) -> None:
    """Delete an LLM config."""
    config.delete()


def _is_user(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)


def preference_delete(*, preference: UserPreference) -> None:
    """Delete a user's preferences; the user falls back to the defaults."""
    preference.delete()


def llm_config_update(
    *,
    config: LLMConfig,
    name: str | _Unset = UNSET,
    description: str | _Unset = UNSET,
    model: Model | _Unset | None = UNSET,
) -> LLMConfig:
    """Change the given fields of an LLM config, its name included; UNSET keeps a field.

    llm_config_set names the config it writes, so it cannot rename one; the admin can.
    """
    changes = {} if name is UNSET else {"name": _llm_config_name(name)}
    changes |= _llm_config_changes(description=description, model=model)
    if not changes:
        return config
    try:
        with transaction.atomic():
            for field, value in changes.items():
                setattr(config, field, value)
            config.save(update_fields=[*changes, "updated_at"])
    except IntegrityError:
        config.refresh_from_db()
        if "name" in changes and (
            LLMConfig.objects.filter(name=changes["name"]).exclude(pk=config.pk).exists()
        ):
            raise AlreadyExists(
                f"An LLM config named {changes['name']!r} already exists.",
                details={"field": "name", "name": changes["name"]},
            ) from None
        raise
    return config
