"""Export an installed model's plain files and a manifest into a new directory, as an operation.

The destination must be under EXPORT_ROOTS and must not exist: the export writes into a
hidden sibling and renames it at the end, so a cancelled or failed export leaves nothing.
Modes: copy (the real bytes), hardlink (a link to the blob: same filesystem), symlink (a
link to the blob: moving or deleting the model breaks it). manifest.json names the repo,
revision, commit and every file with its size and sha256 (read from the bytes exported).
"""

from __future__ import annotations

import json
import time

from django.utils import timezone

from ..errors import InvalidInput, NotInstalled
from ..executors import executor
from ..models import Installation, Model, Operation, OperationKind
from ..store import get_store
from ..store.local import EXPORT_MODES
from .operations import StartResult, operation_start
from .progress import ByteProgress, ProgressReporter


def _installation(model: Model) -> Installation:
    installation = Installation.objects.filter(model=model).first()
    if installation is None or not installation.files:
        raise NotInstalled(
            f"{model.key} is not installed; there is nothing to export.",
            details={"model": model.key},
        )
    return installation


def export_start(*, model: Model, dest: str, mode: str = "copy", user=None) -> StartResult:
    """Check an export and queue it.

    Raise NotInstalled, InvalidInput (a mode), and the path errors of store/local.py for
    `dest` (off, "..", outside EXPORT_ROOTS, ERR_ALREADY_EXISTS when it exists).
    """
    plan = export_plan(model=model, dest=dest, mode=mode)
    return operation_start(model=model, kind=OperationKind.EXPORT, user=user, plan=plan)


def export_plan(*, model: Model, dest: str, mode: str = "copy") -> dict:
    """Check an export; return the plan of its operation (for a command run in the foreground)."""
    if mode not in EXPORT_MODES:
        raise InvalidInput(
            f"mode must be one of {', '.join(EXPORT_MODES)}.", details={"field": "mode"}
        )
    _installation(model)
    target = get_store().export_dest(dest)
    return {"dest": str(target.path), "dest_name": target.name, "mode": mode}


@executor(OperationKind.EXPORT)
def export_execute(op: Operation) -> dict:
    """Write the files and the manifest into the new directory; return its figures."""
    store = get_store()
    model = op.model
    plan = op.plan or {}
    mode = plan["mode"]
    started = time.monotonic()
    installation = _installation(model)
    target = store.export_dest(plan["dest"])  # checked again: it may exist by now
    files = store.export_files(
        installation.location, model.repo_id, installation.commit_hash, installation.files
    )
    total = sum(f.size for f in files)
    on_bytes = ByteProgress(
        ProgressReporter(op),
        total=total,
        cancelled="Export cancelled; nothing was written.",
    )

    def manifest(rows: list[dict]) -> bytes:
        body = {
            "model": model.key,
            "name": model.name,
            "type": model.type,
            "repo": model.repo_id,
            "revision": model.revision,
            "commit": installation.commit_hash,
            "exported_at": timezone.now().isoformat(),
            "mode": mode,
            "files": rows,
        }
        return json.dumps(body, indent=2).encode() + b"\n"

    rows = store.export_write(
        target, files, mode=mode, manifest=manifest, tmp_name=f"export-{op.pk}", on_bytes=on_bytes
    )
    on_bytes.finish()
    return {
        "dest": target.name,
        "mode": mode,
        "files": len(rows),
        "bytes_total": total,
        "commit": installation.commit_hash,
        "seconds": round(time.monotonic() - started, 3),
    }
