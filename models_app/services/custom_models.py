"""Custom entries: a user's Hub repo, added by repo id (the Semantik design's v2).

Inspect asks the hub what the repo is (its pipeline tag, its files with sizes); add checks
the requested type against that, reads a GGUF file's header by Range requests (the facts
the runtime's memory estimate needs, without the download) and saves one entry per chosen
file; remove takes the entry out again, its files too when asked. Curated entries are the
YAML's and are never touched here, nor custom ones by a registry sync.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from .. import hub, selectors
from ..constants import MODEL_KEY_RE, MODEL_TYPES, REPO_ID_RE
from ..errors import (
    AlreadyExists,
    ConfirmRequired,
    Incompatible,
    InUse,
    InvalidInput,
    InvalidState,
    NotFound,
    error_of_code,
)
from ..gguf import FILE_TYPES, GGML_TYPES
from ..models import (
    EventKind,
    Installation,
    Model,
    ModelSource,
    OperationKind,
    OperationState,
)
from ..phrasing import type_label, with_article
from ..registry import GGUF_TYPES, POOLING_MODES
from .events import event_record
from .execution import operation_execute
from .gguf_remote import gguf_remote_facts
from .model_facts import ram_required_estimate
from .operations import operation_begin, operation_exclusion_check

# The pipeline tags each type fits; a repo without one contradicts nothing.
PIPELINE_TAGS = {
    "llm": {"text-generation", "text2text-generation", "image-text-to-text", "conversational"},
    "embedding": {"sentence-similarity", "feature-extraction"},
    "reranker": {"text-ranking", "text-classification"},
    "splade": {"fill-mask", "feature-extraction"},
}
# Files a transformers / sentence-transformers snapshot needs besides its weights.
SNAPSHOT_EXTRAS = re.compile(r"^([^/]+\.(json|txt|model)|\d+_[A-Za-z]+/.+)$")
WEIGHTS = re.compile(r"^[^/]+\.safetensors$")
LEGACY_WEIGHTS = re.compile(r"^pytorch_model[^/]*\.bin$")
QUANT_NAMES = {name.upper() for name in FILE_TYPES.values()} | {
    name for name, _, _ in GGML_TYPES.values()
}
QUANT_TOKEN = re.compile(r"^(I?Q\d(_[A-Z0-9]+)*|F16|F32|BF16)$")
GGUF_POOLING = {"mean": "mean", "cls": "cls", "last": "last_token"}
MAX_DIMENSION = 65_536
MAX_PREFIX = 1_000
MAX_INSTRUCTION = 4_000
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class GGUFChoice:
    path: str
    size: int | None
    quantization: str
    sha256: str | None


@dataclass(frozen=True)
class RepoInspection:
    """What the hub says a repo is, and what it can be added as."""

    repo_id: str
    revision: str
    commit_hash: str
    pipeline_tag: str | None
    gated: str | bool
    gguf_files: list[GGUFChoice]
    has_snapshot_weights: bool
    types: list[str] = field(default_factory=list)  # the types that do not contradict it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantization_of(filename: str) -> str:
    """Return the quantization a GGUF file name says (`...-Q4_K_M.gguf`), or ""."""
    stem = filename.rsplit("/", 1)[-1].removesuffix(".gguf")
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", stem)
    for token in reversed(re.split(r"[-.]", stem)):
        upper = token.upper()
        if upper in QUANT_NAMES or QUANT_TOKEN.match(upper):
            return upper
    return ""


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


def _snapshot_files(listing: hub.RepoListing) -> list[hub.RepoFile]:
    """Return the files a snapshot entry takes: config, tokenizer, modules and one weight format."""
    weights = [f for f in listing.files if WEIGHTS.match(f.path)]
    if not weights:
        weights = [f for f in listing.files if LEGACY_WEIGHTS.match(f.path)]
    extras = [f for f in listing.files if SNAPSHOT_EXTRAS.match(f.path)]
    if not weights or not any(f.path == "config.json" for f in extras):
        return []
    return sorted([*extras, *weights], key=lambda f: f.path)


def _fitting_types(listing: hub.RepoListing, gguf_files: list, snapshot: list) -> list[str]:
    tag = listing.pipeline_tag
    types = []
    for type_ in MODEL_TYPES:
        if tag and tag not in PIPELINE_TAGS[type_]:
            continue
        if (gguf_files and type_ in GGUF_TYPES) or (snapshot and type_ != "llm"):
            types.append(type_)
    return types


def custom_repo_inspect(*, repo_id: str, revision: str = "main") -> RepoInspection:
    """Ask the hub about a repo: its commit, pipeline tag, GGUF files (sizes, quantization).

    Raise NotFound for an unknown repo or revision, AuthError for a gated repo this token
    cannot download (the message says what to do).
    """
    _check_repo_id(repo_id, revision)
    listing = _listing(repo_id, revision)
    return _inspection(listing)


def _inspection(listing: hub.RepoListing) -> RepoInspection:
    gguf_files = [
        GGUFChoice(path=f.path, size=f.size, quantization=quantization_of(f.path), sha256=f.sha256)
        for f in listing.files
        if f.path.endswith(".gguf")
    ]
    snapshot = _snapshot_files(listing)
    return RepoInspection(
        repo_id=listing.repo_id,
        revision=listing.revision,
        commit_hash=listing.commit_hash,
        pipeline_tag=listing.pipeline_tag,
        gated=listing.gated,
        gguf_files=gguf_files,
        has_snapshot_weights=bool(snapshot),
        types=_fitting_types(listing, gguf_files, snapshot),
    )


def _type_check(inspection: RepoInspection, type_: str, *, gguf: bool) -> None:
    """Refuse a type the repo's pipeline tag or files contradict (ERR_INCOMPATIBLE)."""
    what = inspection.repo_id
    tag = inspection.pipeline_tag
    if tag and tag not in PIPELINE_TAGS[type_]:
        fits = [type_label(t) for t in MODEL_TYPES if tag in PIPELINE_TAGS[t]]
        hint = f"; it fits {' or '.join(fits)}" if fits else ""
        raise Incompatible(
            f"{what} is tagged {tag!r} on the Hub, which is not {with_article(type_label(type_))} "
            f"model{hint}.",
            details={"pipeline_tag": tag, "type": type_, "types": inspection.types},
        )
    if type_ == "llm" and not inspection.gguf_files:
        raise Incompatible(
            f"{what} has no .gguf file: an LLM entry needs one (the built-in runtime is "
            "llama.cpp). Look for a GGUF conversion of it.",
            details={"type": type_},
        )
    if gguf and type_ not in GGUF_TYPES:
        raise Incompatible(
            f"{with_article(type_label(type_)).capitalize()} model cannot be a GGUF file; "
            "pick a repo with safetensors weights.",
            details={"type": type_},
        )
    if not gguf and not inspection.has_snapshot_weights:
        raise Incompatible(
            f"{what} has no config.json with safetensors (or pytorch_model.bin) weights, "
            f"which {with_article(type_label(type_))} model needs.",
            details={"type": type_},
        )


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
    inspection = _inspection(listing)
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
    _type_check(inspection, type_, gguf=bool(chosen))

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
        per_file = [_snapshot_fields(_snapshot_files(listing))]
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


def custom_model_remove(
    *, model: Model, user=None, delete_files: bool = False, confirm: bool = False
) -> dict[str, Any]:
    """Remove a custom entry. Refused while installed unless `delete_files`: then its files
    are deleted first (a delete operation run here, with the usage preflight's rules) and
    the entry goes when that delete succeeded. Return what was done.
    """
    if model.source != ModelSource.CUSTOM:
        raise InvalidState(
            f"{model.key} is {model.get_source_display().lower()}, not a custom entry: only "
            "custom entries can be removed (curated ones come from the registry files).",
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
            message=f"Custom entry {row.key} removed"
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
