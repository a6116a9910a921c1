"""Delete a model's files: the usage check again under row locks, resets, removal, events."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Q

from .. import selectors
from ..errors import ConfirmRequired, InUse, InvalidState
from ..executors import executor
from ..models import (
    ActiveModel,
    EventKind,
    Installation,
    Model,
    Operation,
    OperationKind,
    StoreLocation,
    UnmanagedRepo,
)
from ..store import get_store, repo_folder
from .events import event_record
from .execution import operation_execute
from .operations import StartResult, operation_begin, operation_start
from .progress import heartbeat_kept
from .reconcile import store_reconcile
from .runtime import runtime_unload_for

logger = logging.getLogger(__name__)


def delete_start(*, model: Model, confirm: bool = False, user=None) -> StartResult:
    """Check usage, then queue a delete operation (the same one-operation rule as downloads).

    An active operation on the model answers first, whatever the model's state: a delete
    returns that one, any other kind (a first download too) is ERR_ALREADY_RUNNING naming
    it. Then a collection blocks (ERR_IN_USE) and any warning needs confirm
    (ERR_CONFIRM_REQUIRED), both errors carrying the preflight; a model that is not
    installed is a no-op answer. The preflight runs with the model row locked, so a
    download cannot begin between it and the insert.
    """

    def preflight() -> StartResult | None:
        usage = selectors.model_usage(model=model)
        if usage["blocked_by_collections"]:
            names = ", ".join(usage["blocked_by_collections"])
            raise InUse(
                f"{model.key} is used by collection {names}; delete or move those first.",
                details={"usage": usage},
            )
        if not usage["installed"]:
            return StartResult(
                None, False, f"{model.key} is not installed; nothing to delete.", "not_installed"
            )
        if usage["location"] != "primary":
            raise InvalidState(
                f"{model.key} lives in the read-only legacy cache; Modelyard does not delete "
                "there.",
                details={"usage": usage},
            )
        if usage["requires_confirmation"] and not confirm:
            raise ConfirmRequired(
                f"Deleting {model.key} needs confirmation: " + " ".join(usage["warnings"]),
                details={"usage": usage},
            )
        return None

    return operation_start(model=model, kind=OperationKind.DELETE, user=user, unless=preflight)


def delete_now(*, model: Model, parent: Operation, user=None) -> str:
    """Delete a model's files here and now, as a delete operation that is part of `parent`.

    For prune: the delete is its own operation row (exclusive per model, visible, with
    its event) but never enqueued, so it runs exactly once. Return its end state; raise
    AlreadyRunning when another operation holds the model.
    """
    op = operation_begin(kind=OperationKind.DELETE, model=model, parent=parent, user=user)
    return operation_execute(operation=op, execute=delete_execute)


@executor(OperationKind.DELETE)
def delete_execute(op: Operation) -> dict:
    """Remove the model's files and apply the resets, all decided under row locks."""
    from collections_app.models import LLMConfig, UserPreference

    store = get_store()
    # A loaded model is unloaded first (its runner holds the file open): the delete holds
    # the model, so its host's runtime stops the runner for it (services/runtime/). Not
    # for a delete a collection blocks (checked again below, under the locks), and not
    # inside the transaction: the runtime must be able to write meanwhile (SQLite).
    unloaded = False
    if not _collections_using(op.model):
        unloaded = runtime_unload_for(model=op.model, operation=op)
    with transaction.atomic():
        # The model row lock serialises us with collection_create, which locks the same
        # row before inserting: a collection made after the preflight is seen here.
        model = Model.objects.select_for_update().get(pk=op.model_id)
        collections = _collections_using(model, lock=True)
        if collections:
            raise InUse(
                f"{model.key} is used by collection {', '.join(collections)}; nothing was deleted.",
                details={"collections": collections},
            )
        installation = Installation.objects.select_for_update().filter(model=model).first()
        if installation is None or installation.location != "primary":
            return {"bytes_freed": 0, "note": "not installed in the models store"}
        removal = store.plan_removal(
            model.repo_id, model.file_patterns, selectors.repo_stakeholders(model)
        )
        resets = {
            "user_preferences": sum(
                UserPreference.objects.filter(**{field: model}).update(**{field: None})
                for field in ("default_embedding_model", "default_llm", "default_reranker")
            ),
            "llm_configs": list(
                LLMConfig.objects.filter(model=model).values_list("name", flat=True)
            ),
            "active_slot_cleared": bool(ActiveModel.objects.filter(model=model).delete()[0]),
        }
        LLMConfig.objects.filter(model=model).update(model=None)
        with heartbeat_kept(op):  # removing a large repo's files can take a while
            removal.execute()
        installation.delete()
        event_record(
            kind=EventKind.DELETED,
            message=f"Deleted {model.key}: {removal.bytes_freed:,} bytes freed.",
            model=model,
            operation=op,
            actor=op.created_by,
            bytes_freed=removal.bytes_freed,
            partial_bytes=removal.partial_bytes,
            **resets,
        )
    # The operation's outcome is published when it ends.
    store_reconcile(folders=[repo_folder(model.repo_id)], publish=False)
    return {
        "bytes_freed": removal.bytes_freed,
        "partial_bytes": removal.partial_bytes,
        "unloaded": unloaded,
        **resets,
    }


def _collections_using(model: Model, *, lock: bool = False) -> list[str]:
    from collections_app.models import Collection

    qs = Collection.objects.filter(
        Q(embedding_model=model) | Q(reranker_model=model) | Q(splade_model=model)
    )
    if lock:
        qs = qs.select_for_update()
    return list(qs.order_by("name").values_list("name", flat=True))


def unmanaged_delete(*, repo: UnmanagedRepo, user=None) -> int:
    """Delete a repo no registry entry claims from the models store; return the bytes freed."""
    if repo.location != StoreLocation.PRIMARY:
        raise InvalidState(
            f"{repo.repo_id} lives in the read-only legacy cache; Modelyard does not delete there.",
            details={"repo_id": repo.repo_id, "location": repo.location},
        )
    removal = get_store().plan_removal(repo.repo_id, ["*"], [], repo_type=repo.repo_type)
    removal.execute()
    event_record(
        kind=EventKind.DELETED,
        message=f"Deleted unmanaged repo {repo.repo_id}: {removal.bytes_freed:,} bytes freed.",
        actor=user,
        repo_id=repo.repo_id,
        repo_type=repo.repo_type,
        bytes_freed=removal.bytes_freed,
    )
    store_reconcile(folders=[repo_folder(repo.repo_id, repo.repo_type)])
    return removal.bytes_freed
