"""Import a local GGUF file or model folder into the store, as an import operation.

The start checks what it can at once (the path under IMPORT_ROOTS, the format, the type,
the key) and writes the registry entry (source local, repo `local/<slug>`, revision
main); the executor hashes every file while placing it as a blob (copy, hardlink,
symlink or move), links the snapshot, writes refs/main and reconciles that one repo.

A cancelled or failed import leaves nothing placed: the local repo folder is removed
whole and the entry stays "not installed" (its operation shows the failure; Retry runs
the import again from the same path). The entry is kept rather than deleted because the
operation row belongs to it.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from ..constants import MODEL_KEY_RE
from ..errors import AlreadyExists, Cancelled, FormatError, Incompatible, InvalidInput
from ..executors import executor
from ..gguf import gguf_facts, gguf_header_of
from ..models import Installation, Model, ModelSource, ModelType, Operation, OperationKind
from ..store import get_store, repo_folder
from ..store.local import IMPORT_MODES, LocalPath, SourceFile, local_commit
from .model_facts import HEADER, ram_required_estimate
from .operations import StartResult, operation_start
from .progress import ByteProgress, LostOwnership, ProgressReporter
from .reconcile import store_reconcile

logger = logging.getLogger(__name__)

GGUF_TYPES = (ModelType.LLM, ModelType.EMBEDDING, ModelType.RERANKER)
FOLDER_TYPES = (ModelType.EMBEDDING, ModelType.RERANKER, ModelType.SPLADE)
FOLDER_WEIGHTS = (".safetensors", ".bin")
# Keys that would shadow a route under /api/v1/models/.
RESERVED_KEYS = frozenset({"import", "custom", "recommended"})
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _gguf_name(filename: str) -> str:
    """Return the snapshot name of an imported GGUF: no glob characters, a .gguf suffix."""
    name = _UNSAFE_NAME.sub("_", filename).lstrip(".") or "model"
    return name if name.lower().endswith(".gguf") else f"{name}.gguf"


def _check_format(source: LocalPath, files: list[SourceFile], is_dir: bool, type: str) -> dict:
    """Return what the format gives the entry (gguf_file, patterns, facts); raise ERR_FORMAT."""
    if is_dir:
        names = {f.name for f in files}
        if "config.json" not in names:
            raise FormatError(
                f"{source.label} has no config.json: a model folder holds a config.json and "
                "its weights (*.safetensors or *.bin).",
                details={"path": source.name},
            )
        if not any(name.endswith(FOLDER_WEIGHTS) for name in names):
            raise FormatError(
                f"{source.label} has no weights: a model folder holds *.safetensors or *.bin "
                "files beside its config.json.",
                details={"path": source.name},
            )
        if type not in FOLDER_TYPES:
            raise Incompatible(
                "A model folder is imported as type embedding, reranker or splade, not as "
                f"type {type}; the built-in runtime runs GGUF files.",
                details={"type": type},
            )
        return {"gguf_file": "", "allow_patterns": ["*"], "facts": {}}
    try:
        header = gguf_header_of(source.path)
    except FormatError as exc:
        raise FormatError(
            f"{source.label} is not a GGUF file we can read: {exc.message} Import takes a "
            "GGUF file or a model folder (config.json and weights).",
            details={"path": source.name, **exc.details},
        ) from None
    if type not in GGUF_TYPES:
        raise Incompatible(
            f"A GGUF file is imported as type llm, embedding or reranker, not as type {type}.",
            details={"type": type},
        )
    return {
        "gguf_file": _gguf_name(files[0].name),
        "allow_patterns": [],
        "facts": gguf_facts(header),
    }


def _slug(*, name: str, key: str | None) -> str:
    slug = key if key else slugify(name).replace("_", "-")
    if slug in RESERVED_KEYS:
        raise InvalidInput(
            f"The key {slug} is reserved; give another name or key.", details={"field": "key"}
        )
    if not slug or not re.match(MODEL_KEY_RE, slug) or len(slug) > 150:
        field = "key" if key else "name"
        raise InvalidInput(
            "The key must be lower-case letters, digits, '.', '_' or '-' (from the name when "
            "no key is given).",
            details={"field": field},
        )
    return slug


def import_start(
    *,
    path: str,
    type: str,
    name: str,
    key: str | None = None,
    mode: str = "copy",
    user=None,
) -> StartResult:
    """Check an import and queue it; the entry is written now, "not installed" until it ends.

    See `import_prepare` for what is refused.
    """
    model, plan = import_prepare(path=path, type=type, name=name, key=key, mode=mode, user=user)
    return operation_start(model=model, kind=OperationKind.IMPORT, user=user, plan=plan)


def import_prepare(
    *,
    path: str,
    type: str,
    name: str,
    key: str | None = None,
    mode: str = "copy",
    user=None,
) -> tuple[Model, dict]:
    """Check an import, write its entry; return the entry and the import operation's plan.

    For `import_start`, and for a command that runs the operation in the foreground.

    Raise the path errors of store/local.py, FormatError (not a GGUF, a folder without
    config or weights), Incompatible (a type the format cannot be), InvalidInput (a mode,
    a key, hardlink across filesystems) or AlreadyExists (the key is another entry's, or
    an imported entry that is installed).
    """
    if mode not in IMPORT_MODES:
        raise InvalidInput(
            f"mode must be one of {', '.join(IMPORT_MODES)}.", details={"field": "mode"}
        )
    if type not in ModelType.values:
        raise InvalidInput(f"Unknown type {type!r}.", details={"field": "type"})
    name = " ".join(name.split())
    if not name:
        raise InvalidInput("Give the model a name.", details={"field": "name"})
    store = get_store()
    source, files, is_dir = store.import_source(path)
    found = _check_format(source, files, is_dir, type)
    if mode == "hardlink" and not store.on_store_filesystem(source.path):
        raise InvalidInput(
            f"A hardlink import needs {source.label} on the filesystem of the models store; "
            "use mode copy (or symlink) instead.",
            details={"field": "mode", "mode": mode},
        )
    slug = _slug(name=name, key=key)
    repo_id = store.local_repo_id(slug)
    facts = found["facts"]
    size = sum(f.size for f in files)
    values = {
        "repo_id": repo_id,
        "revision": "main",
        "type": type,
        "name": name[:200],
        "description": f"Imported from {source.name}.",
        "gguf_file": found["gguf_file"],
        "allow_patterns": found["allow_patterns"],
        "download_size": size,
        "source": ModelSource.LOCAL,
        "in_registry": False,
        "added_by": user if getattr(user, "is_authenticated", False) else None,
        "parameter_count": facts.get("parameter_count"),
        "quantization": facts.get("quantization") or "",
        "context_window": facts.get("context_length"),
        "gguf_facts": facts | {"source": HEADER, "commit_hash": ""} if facts else {},
        "ram_required": ram_required_estimate(facts=facts, file_size=size) if facts else None,
    }
    with transaction.atomic():
        model = Model.objects.select_for_update().filter(key=slug).first()
        other_repo = Model.objects.filter(repo_id=repo_id).exclude(key=slug).exists()
        if other_repo or (model is not None and model.source != ModelSource.LOCAL):
            raise AlreadyExists(
                f"The key {slug} is taken by another entry; give another name or key.",
                details={"field": "key", "model": slug},
            )
        if model is not None and Installation.objects.filter(model=model).exists():
            raise AlreadyExists(
                f"{slug} is imported and installed already; delete it first to import it again.",
                details={"field": "key", "model": slug},
            )
        if model is None:
            model = Model.objects.create(key=slug, **values)
        elif not model.operations.filter(state__in=("queued", "running")).exists():
            # A not-installed local entry (a failed import) takes the new import's facts.
            for field, value in values.items():
                setattr(model, field, value)
            model.save()
    plan = {
        "source": str(source.path),
        "source_name": source.name,
        "folder": is_dir,
        "mode": mode,
        "files": [
            {"path": str(f.path), "name": found["gguf_file"] or f.name, "size": f.size}
            for f in files
        ],
    }
    return model, plan


@executor(OperationKind.IMPORT)
def import_execute(op: Operation) -> dict:
    """Place the planned files as blobs, link the snapshot, reconcile; clean up on any stop."""
    store = get_store()
    model = op.model
    try:
        return _import(op, store)
    except LostOwnership:
        raise  # reaped: the folder may be another worker's by now
    except BaseException:
        if not Installation.objects.filter(model=model).exists():
            store.local_repo_discard(model.repo_id)
        raise


def _import(op: Operation, store) -> dict:
    model = op.model
    plan = op.plan or {}
    mode = plan["mode"]
    if Installation.objects.filter(model=model).exists():
        raise AlreadyExists(
            f"{model.key} is installed already; delete it first to import it again.",
            details={"model": model.key},
        )
    started = time.monotonic()
    files = plan["files"]
    # The source may have changed since the start: check it again, as the start did.
    source, found, _ = store.import_source(plan["source"])
    now_sizes = {str(f.path): f.size for f in found}
    if sorted(now_sizes) != sorted(f["path"] for f in files):
        raise InvalidInput(
            f"'{plan['source_name']}' changed since the import was queued; import it again.",
            details={"path": plan["source_name"]},
        )
    total = sum(now_sizes.values())
    reporter = ProgressReporter(op)
    on_bytes = ByteProgress(
        reporter,
        total=total,
        cancelled="Import cancelled; nothing was placed in the store.",
    )

    store.local_repo_discard(model.repo_id)  # leftovers of an earlier try: start clean
    store.prepare_repo(model.repo_id)
    digests: dict[str, str] = {}
    for index, f in enumerate(files):
        path = Path(f["path"])
        digests[f["name"]] = store.place_blob(
            model.repo_id, path, mode, tmp_name=f"import-{op.pk}-{index}", on_bytes=on_bytes
        )
    on_bytes.finish()
    if reporter.cancel_requested:
        raise Cancelled("Import cancelled; nothing was placed in the store.")
    commit = local_commit(digests)
    for name, digest in digests.items():
        store.link_snapshot(model.repo_id, commit, name, digest)
    store.write_ref(model.repo_id, model.revision, commit)
    Operation.objects.filter(pk=op.pk).update(commit_hash=commit)
    op.commit_hash = commit
    store_reconcile(folders=[repo_folder(model.repo_id)], publish=False)
    Model.objects.filter(pk=model.pk).update(sha256=digests)
    if not Installation.objects.filter(model=model).update(verified_at=timezone.now()):
        raise FormatError(
            f"The store does not see {model.key} as installed after the import.",
            details={"model": model.key},
        )
    if mode == "move":
        # Only now that the store holds every file: the sources go (a link or a copy was
        # placed, so a cancel before this point left them untouched).
        for f in files:
            Path(f["path"]).unlink(missing_ok=True)
        if plan["folder"]:
            _remove_empty_dirs(source.path)
    return {
        "files": len(files),
        "bytes_total": total,
        "commit": commit,
        "mode": mode,
        "source": plan["source_name"],
        "seconds": round(time.monotonic() - started, 3),
    }


def _remove_empty_dirs(top: Path) -> None:
    """Remove a moved folder's directories that are empty now (hidden files keep theirs)."""
    for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    if top.is_dir() and not any(top.iterdir()):
        top.rmdir()
