"""Custom entries: a user's Hub repo, added by repo id (the Semantik design's v2).

Inspect asks the hub what the repo is (its pipeline tag, its files with sizes); add checks
the requested type against that, reads a GGUF file's header by Range requests (the facts
the runtime's memory estimate needs, without the download) and saves one entry per chosen
file; remove takes the entry out again, its files too when asked. Curated entries are the
YAML's and are never touched here, nor custom ones by a registry sync.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import transaction

from .. import hub, selectors
from ..constants import MODEL_KEY_RE, MODEL_TYPES, REPO_ID_RE
from ..errors import (
    AlreadyExists,
    ConfirmRequired,
    InUse,
    InvalidInput,
    InvalidState,
    NotFound,
    error_of_code,
)
from ..models import (
    EventKind,
    Installation,
    Model,
    ModelSource,
    OperationKind,
    OperationState,
)
from ..registry import GGUF_TYPES, POOLING_MODES
from .custom_repo import (
    GGUFChoice,
    RepoInspection,
    inspection_of,
    snapshot_files,
    type_check,
)
from .events import event_record
from .execution import operation_execute
from .gguf_remote import gguf_remote_facts
from .model_facts import ram_required_estimate
from .operations import operation_begin, operation_exclusion_check

GGUF_POOLING = {"mean": "mean", "cls": "cls", "last": "last_token"}
MAX_DIMENSION = 65_536
MAX_PREFIX = 1_000
MAX_INSTRUCTION = 4_000
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _listing(repo_id: str, revision: str) -> hub.RepoListing:
    return hub.repo_listing(
        repo_id=repo_id, revision=revision, endpoint=settings.HF_ENDPOINT, token=settings.HF_TOKEN
    )


def _check_repo_id(repo_id: str, revision: str) -> None:
    """Refuse what cannot name a repo on the hub: NotFound, as the hub would answer."""
    if not isinstance(repo_id, str) or not re.match(REPO_ID_RE, repo_id) or len(repo_id) > 200:
        raise NotFound(
            f"{repo_id!r} is no repo on the Hub: a repo id is owner/name, e.g. "
            "BAAI/bge-small-en-v1.5.",
            details={"repo_id": repo_id},
        )
    if not revision or len(revision) > 100 or CONTROL.search(revision) or " " in revision:
        raise NotFound(
            f"{revision!r} is no revision of {repo_id}: a revision is a branch, a tag or a commit.",
            details={"revision": revision},
        )


def custom_repo_inspect(*, repo_id: str, revision: str = "main") -> RepoInspection:
    """Ask the hub about a repo: its commit, pipeline tag, GGUF files (sizes, quantization).

    Raise NotFound for an unknown repo or revision, AuthError for a gated repo this token
    cannot download (the message says what to do).
    """
    _check_repo_id(repo_id, revision)
    listing = _listing(repo_id, revision)
    return inspection_of(listing)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:150] or "model"


def _key_for(repo_id: str, quant: str, taken: set[str]) -> str:
    """Return a free registry key: the repo's name (without -GGUF) and the quantization."""
    owner, _, name = repo_id.partition("/")
    base = _slug(re.sub(r"[-_.]gguf$", "", name, flags=re.IGNORECASE))
    suffix = f"-{_slug(quant)}" if quant else ""
    candidates = [f"{base}{suffix}", f"{_slug(owner)}-{base}{suffix}"]
    candidates += [f"{base}{suffix}-{n}" for n in range(2, 100)]
    for key in candidates:
        free = re.match(MODEL_KEY_RE, key) and key not in taken and key != "custom"
        if free and not Model.objects.filter(key=key).exists():
            return key
    raise AlreadyExists(f"No free key for {repo_id} {quant}.", details={"repo_id": repo_id})


def _options(*, dimension, pooling, query_prefix, document_prefix, instruction) -> dict[str, Any]:
    if dimension is not None and not (
        isinstance(dimension, int) and 1 <= dimension <= MAX_DIMENSION
    ):
        raise InvalidInput(
            f"dimension must be a whole number from 1 to {MAX_DIMENSION:,}.",
            details={"field": "dimension"},
        )
    if pooling and pooling not in POOLING_MODES:
        raise InvalidInput(
            f"pooling must be one of {', '.join(POOLING_MODES)}.", details={"field": "pooling"}
        )
    for name, value, limit in (
        ("query_prefix", query_prefix, MAX_PREFIX),
        ("document_prefix", document_prefix, MAX_PREFIX),
        ("instruction", instruction, MAX_INSTRUCTION),
    ):
        if value and (len(value) > limit or CONTROL.search(value)):
            raise InvalidInput(
                f"{name} must be text of at most {limit:,} characters.", details={"field": name}
            )
    return {
        "embedding_dimension": dimension,
        "pooling": pooling or "",
        "query_prefix": query_prefix or "",
        "document_prefix": document_prefix or "",
        "options": {"instruction": instruction} if instruction else {},
    }


def _gguf_fields(inspection: RepoInspection, choice: GGUFChoice, type_: str) -> dict[str, Any]:
    facts = gguf_remote_facts(
        repo_id=inspection.repo_id, commit=inspection.commit_hash, filename=choice.path
    )
    quant = facts.get("quantization") or choice.quantization
    ram = ram_required_estimate(facts=facts, file_size=choice.size)
    fields = {
        "gguf_file": choice.path,
        "allow_patterns": [],
        "download_size": choice.size,
        "sha256": {choice.path: choice.sha256} if choice.sha256 else {},
        "quantization": quant or "",
        "parameter_count": facts.get("parameter_count"),
        "context_window": facts.get("context_length"),
        "family": (facts.get("architecture") or "")[:100],
        "gguf_facts": facts,
        "ram_required": ram,
        "memory_estimates": {quant: ram} if quant and ram else {},
        "tags": ["gguf"],
    }
    if type_ == "embedding":
        fields["embedding_dimension"] = facts.get("embedding_length")
        fields["pooling"] = GGUF_POOLING.get(facts.get("pooling_type") or "", "")
    return fields


def _snapshot_fields(listing_files: list[hub.RepoFile]) -> dict[str, Any]:
    sizes = [f.size for f in listing_files]
    return {
        "gguf_file": "",
        "allow_patterns": [f.path for f in listing_files],
        "download_size": sum(sizes) if None not in sizes else None,
        "sha256": {f.path: f.sha256 for f in listing_files if f.sha256},
    }


def custom_model_add(
    *,
    repo_id: str,
    type: str,
    revision: str = "main",
    file: str | None = None,
    files: list[str] | None = None,
    name: str | None = None,
    dimension: int | None = None,
    pooling: str | None = None,
    query_prefix: str | None = None,
    document_prefix: str | None = None,
    instruction: str | None = None,
    user=None,
) -> list[Model]:
    """Check a repo against the hub and save it as custom entries: one per chosen GGUF file,
    or one snapshot entry (config and weights). Return the new entries, not installed.

    NotFound: no such repo, revision or file. AuthError: gated without access.
    Incompatible: the type contradicts the repo's pipeline tag or files. AlreadyExists:
    an entry of this repo, revision and file exists. FormatError: a GGUF header that
    cannot be read (or is larger than the Range reader's cap).
    """
    type_ = type
    if type_ not in MODEL_TYPES:
        raise InvalidInput(
            f"type must be one of {', '.join(MODEL_TYPES)}.", details={"field": "type"}
        )
    _check_repo_id(repo_id, revision)
    extra = _options(
        dimension=dimension,
        pooling=pooling,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
        instruction=instruction,
    )
    chosen = list(dict.fromkeys([*([file] if file else []), *(files or [])]))
    listing = _listing(repo_id, revision)
    inspection = inspection_of(listing)
    gguf_by_path = {g.path: g for g in inspection.gguf_files}
    for path in chosen:
        if path not in gguf_by_path:
            raise NotFound(
                f"{repo_id}@{revision} has no GGUF file {path!r}.",
                details={"file": path, "gguf_files": list(gguf_by_path)},
            )
    if (
        not chosen
        and type_ in GGUF_TYPES
        and gguf_by_path
        and not (type_ != "llm" and inspection.has_snapshot_weights)
    ):
        if len(gguf_by_path) > 1:
            raise InvalidInput(
                f"{repo_id} has {len(gguf_by_path)} GGUF files: choose one or more (file or "
                "files).",
                details={"field": "file", "gguf_files": list(gguf_by_path)},
            )
        chosen = list(gguf_by_path)
    type_check(inspection, type_, gguf=bool(chosen))

    existing = Model.objects.filter(repo_id__iexact=repo_id, revision=revision)
    for path in chosen or [""]:
        same = existing.filter(gguf_file=path) if path else existing.filter(gguf_file="")
        if (entry := same.first()) is not None:
            raise AlreadyExists(
                f"{repo_id} {path} is already an entry: {entry.key}."
                if path
                else f"{repo_id} is already an entry: {entry.key}.",
                details={"model": entry.key},
            )

    # Read every header before the first write: a file that cannot be read adds nothing.
    per_file = [_gguf_fields(inspection, gguf_by_path[p], type_) for p in chosen]
    if not chosen:
        per_file = [_snapshot_fields(snapshot_files(listing))]
    repo_name = repo_id.partition("/")[2]
    created: list[Model] = []
    taken: set[str] = set()
    with transaction.atomic():
        for fields in per_file:
            quant = fields.get("quantization", "")
            key = _key_for(repo_id, quant if fields["gguf_file"] else "", taken)
            taken.add(key)
            base_name = (name or "").strip() or repo_name
            label = f"{base_name} {quant}" if len(per_file) > 1 and quant else base_name
            values = fields | {
                k: v for k, v in extra.items() if v not in (None, "") or k == "options"
            }
            model = Model.objects.create(
                key=key,
                repo_id=repo_id,
                revision=revision,
                type=type_,
                name=label[:200],
                description=f"Custom entry from {repo_id} (pipeline tag "
                f"{inspection.pipeline_tag or 'none'}).",
                source=ModelSource.CUSTOM,
                added_by=user if getattr(user, "is_authenticated", False) else None,
                **values,
            )
            event_record(
                kind=EventKind.ADDED,
                message=f"Custom entry {key} added from {repo_id}"
                + (f" ({model.gguf_file})." if model.gguf_file else "."),
                model=model,
                actor=user,
                repo_id=repo_id,
                revision=revision,
                commit_hash=inspection.commit_hash,
                file=model.gguf_file,
            )
            created.append(model)
    return created


# The sources whose entries a user made, and so may remove (curated: the registry files).
REMOVABLE_SOURCES = (ModelSource.CUSTOM, ModelSource.LOCAL)


def custom_model_remove(
    *, model: Model, user=None, delete_files: bool = False, confirm: bool = False
) -> dict[str, Any]:
    """Remove a custom or local entry (a local one: an import, failed or whose files are
    gone). Refused while installed unless `delete_files`: then its files are deleted first
    (a delete operation run here, with the usage preflight's rules) and the entry goes when
    that delete succeeded. Return what was done.
    """
    if model.source not in REMOVABLE_SOURCES:
        raise InvalidState(
            f"{model.key} is {model.get_source_display().lower()}: only custom and local "
            "entries can be removed (curated ones come from the registry files).",
            details={"model": model.key, "source": model.source},
        )
    operation_exclusion_check(model=model, kind=OperationKind.DELETE)
    usage = selectors.model_usage(model=model)
    if usage["blocked_by_collections"]:
        names = ", ".join(usage["blocked_by_collections"])
        raise InUse(
            f"{model.key} is used by collection {names}; delete or move those first.",
            details={"usage": usage},
        )
    deleted = None
    if usage["installed"]:
        if not delete_files:
            raise InvalidState(
                f"{model.key} is installed: delete its files first, or remove it with "
                "delete_files=true, which deletes them too.",
                details={"model": model.key, "installed": True},
            )
        if usage["location"] != "primary":
            raise InvalidState(
                f"{model.key} lives in the read-only legacy cache; Modelyard does not delete "
                "there.",
                details={"usage": usage},
            )
        if usage["loaded_in_runtime"]:
            # The delete would wait for the runtime to stop the runner, inside this request.
            raise InUse(
                f"{model.key} is loaded in the runtime; unload it first.",
                details={"usage": usage},
            )
        if usage["requires_confirmation"] and not confirm:
            raise ConfirmRequired(
                f"Removing {model.key} deletes its files and needs confirmation: "
                + " ".join(usage["warnings"]),
                details={"usage": usage},
            )
        deleted = _delete_files_here(model=model, user=user)
    with transaction.atomic():
        # Locked, so that no download begins between the check and the removal.
        row = Model.objects.select_for_update().get(pk=model.pk)
        operation_exclusion_check(model=row, kind=OperationKind.DELETE)
        if Installation.objects.filter(model=row).exists():
            raise InvalidState(
                f"{row.key} was installed again meanwhile; it stays.", details={"model": row.key}
            )
        event_record(
            kind=EventKind.REMOVED,
            message=f"{row.get_source_display()} entry {row.key} removed"
            + (f"; its files were deleted ({deleted:,} bytes freed)." if deleted else "."),
            model=row,
            actor=user,
            key=row.key,
            repo_id=row.repo_id,
            file=row.gguf_file,
        )
        row.delete()
    return {"model": model.key, "removed": True, "bytes_freed": deleted or 0}


def _delete_files_here(*, model: Model, user) -> int:
    """Delete the model's files as a delete operation executed in this process; return the
    bytes freed, or raise the error the delete ended with."""
    from .deletion import delete_execute

    op = operation_begin(kind=OperationKind.DELETE, model=model, user=user)
    state = operation_execute(operation=op, execute=delete_execute)
    op.refresh_from_db()
    if state != OperationState.SUCCEEDED:
        raise error_of_code(op.error_code, op.error_message, {"operation": op.pk})
    return int((op.result or {}).get("bytes_freed", 0))
