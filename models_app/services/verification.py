"""Verify an installed model (Papin's `models verify`) and repair what verify found damaged.

Verify needs no network: every file of the installed snapshot is hashed again against the
digest recorded at download, which is the name of its blob in the store (the LFS sha256,
or the git blob id of a small file: sha1 of `blob <size>\\0` and the bytes), plus the
registry's pinned sha256 when it has one. Then the GGUF header is parsed, the memory fit
checked, and, when asked, the vocabulary test-loaded in a child process. Each check is
{name, passed, message}; they go to Installation.verify_checks and the operation's
result. Repair fetches again only the blobs of the damaged files, with the download's
fetch, and hashes those files again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from .. import selectors
from ..errors import (
    ChecksumError,
    FormatError,
    InsufficientRam,
    InvalidState,
    ModelyardError,
    NotInstalled,
)
from ..executors import executor
from ..gguf import gguf_header_of
from ..models import EventKind, Installation, Model, Operation, OperationKind, StoreLocation
from ..runtime.vocab import vocab_load_check
from ..store import get_store, repo_folder
from .downloads import plan_retried, planned_files_fetch, retry_policy
from .events import event_record
from .operations import StartResult, operation_start
from .progress import ByteProgress, ProgressReporter, heartbeat_kept
from .reconcile import store_reconcile

CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_OID = re.compile(r"^[0-9a-f]{40}$")

INTEGRITY, FORMAT, MEMORY, VOCABULARY = (
    "file integrity", "model format", "memory fit", "vocabulary load",
)  # fmt: skip


@dataclass(frozen=True)
class _Target:
    """One installed file and the digests its bytes must have."""

    path: str  # in the repo
    file: Path
    size: int
    sha256: str | None
    git_oid: str | None
    pinned_sha256: str | None


def _check(name: str, passed: bool, message: str) -> dict:
    return {"name": name, "passed": passed, "message": message}


def _installation(model: Model) -> Installation:
    installation = Installation.objects.filter(model=model).first()
    if installation is None:
        raise NotInstalled(
            f"{model.key} is not installed; there is nothing to check.",
            details={"model": model.key},
        )
    return installation


# --- starting -----------------------------------------------------------------------------


def verify_start(*, model: Model, load: bool = False, user=None) -> StartResult:
    """Queue a verify of an installed model; `load` adds the vocabulary test-load."""

    def installed() -> None:
        _installation(model)

    return operation_start(
        model=model, kind=OperationKind.VERIFY, user=user, plan={"load": load}, unless=installed
    )


def repair_start(*, model: Model, user=None) -> StartResult:
    """Queue a repair of the files the last verify found damaged (nothing to do without any)."""

    def damaged() -> StartResult | None:
        installation = _installation(model)
        if installation.location != StoreLocation.PRIMARY:
            raise InvalidState(
                f"{model.key} lives in the read-only legacy cache; Modelyard does not repair "
                "there.",
                details={"model": model.key},
            )
        if not installation.damaged_files:
            return StartResult(
                None, False, f"{model.key} has no damaged file; verify it first.", "not_damaged"
            )
        return None

    return operation_start(model=model, kind=OperationKind.REPAIR, user=user, unless=damaged)


# --- the checks ---------------------------------------------------------------------------


def _recorded_digests(model: Model, commit_hash: str) -> dict[str, dict]:
    """Return the plan entries (sha256, git oid per path) of the operations that fetched this
    commit: the digests of files whose link does not name a blob (a plain file)."""
    plans = Operation.objects.filter(
        model=model,
        commit_hash=commit_hash,
        kind__in=[OperationKind.DOWNLOAD, OperationKind.UPDATE, OperationKind.REPAIR],
        state="succeeded",
    ).values_list("plan", flat=True)
    found: dict[str, dict] = {}
    for plan in plans:
        for entry in plan if isinstance(plan, list) else []:
            found.setdefault(entry.get("path"), entry)
    return found


def _targets(model: Model, installation: Installation, paths: list[str]) -> list[_Target]:
    store = get_store()
    recorded = None
    targets = []
    for path in sorted(paths):
        file, blob_id = store.snapshot_blob(
            installation.location, model.repo_id, installation.commit_hash, path
        )
        sha256 = blob_id if blob_id and _SHA256.match(blob_id) else None
        git_oid = blob_id if blob_id and _GIT_OID.match(blob_id) else None
        if sha256 is None and git_oid is None:
            if recorded is None:
                recorded = _recorded_digests(model, installation.commit_hash)
            entry = recorded.get(path, {})
            sha256, git_oid = entry.get("sha256"), entry.get("git_oid")
        try:
            size = file.stat().st_size
        except OSError:
            size = 0
        pinned = (model.sha256 or {}).get(path)
        targets.append(_Target(path, file, size, sha256, git_oid, pinned))
    return targets


def _hash_files(targets: list[_Target], reporter: ProgressReporter) -> list[tuple[str, str]]:
    """Hash every target, ticking progress per chunk and stopping on cancel between chunks.

    Return (path, why) for each file whose bytes do not match (or that cannot be read).
    """
    counted = ByteProgress(
        reporter,
        total=sum(t.size for t in targets),
        cancelled="Verify cancelled; nothing was recorded.",
    )
    bad = []
    for t in targets:
        if not (t.sha256 or t.git_oid or t.pinned_sha256):
            bad.append((t.path, "no digest was recorded for it"))
            continue
        sha256 = hashlib.sha256()
        git = hashlib.sha1(b"blob %d\0" % t.size) if t.git_oid else None
        try:
            with open(t.file, "rb") as f:
                while chunk := f.read(CHUNK):
                    sha256.update(chunk)
                    if git is not None:
                        git.update(chunk)
                    counted(len(chunk))
        except OSError as exc:
            bad.append((t.path, f"cannot be read ({type(exc).__name__})"))
            continue
        got = sha256.hexdigest()
        for expected, actual, kind in (
            (t.sha256, got, "sha256"),
            (t.pinned_sha256, got, "pinned sha256"),
            (t.git_oid, git.hexdigest() if git else None, "git blob id"),
        ):
            if expected and actual != expected:
                bad.append((t.path, f"{kind} is {actual[:12]}…, expected {expected[:12]}…"))
                break
    counted.finish()
    return bad


def _integrity_check(targets: list[_Target], bad: list[tuple[str, str]]) -> dict:
    if bad:
        return _check(INTEGRITY, False, "; ".join(f"{path}: {why}" for path, why in bad))
    size = filesizeformat(sum(t.size for t in targets))
    n = len(targets)
    files = f"{n} file{'s' if n != 1 else ''}"
    return _check(INTEGRITY, True, f"{files} ({size}): every digest matches")


def _format_check(model: Model, installation: Installation) -> dict | None:
    if not model.gguf_file:
        return None
    store = get_store()
    path = store.snapshot_file(
        installation.location, model.repo_id, installation.commit_hash, model.gguf_file
    )
    try:
        header = gguf_header_of(path)
        size = path.stat().st_size
    except FormatError as exc:
        return _check(FORMAT, False, f"{model.gguf_file}: {exc.message}")
    except OSError as exc:
        return _check(FORMAT, False, f"{model.gguf_file}: {store.redact(str(exc))}")
    arch = header.metadata.get("general.architecture", "unknown architecture")
    end = header.data_offset + header.tensor_bytes
    if end > size:
        return _check(
            FORMAT, False,
            f"{model.gguf_file}: the header promises {end:,} bytes of tensors, the file has "
            f"{size:,}",
        )  # fmt: skip
    return _check(FORMAT, True, f"GGUF v{header.version}, {arch}, {len(header.tensors)} tensors")


def _memory_check(model: Model) -> dict:
    model.refresh_from_db(fields=["gguf_facts", "ram_required"])
    fit = selectors.model_fit(model, capacity=selectors.runtime_capacity())
    status = fit["status"]
    if status == "not_runnable":
        return _check(MEMORY, True, "skipped: the built-in runtime runs GGUF files only")
    if status == "unknown":
        return _check(MEMORY, True, "skipped: nothing tells what it needs in memory")
    need, have = filesizeformat(fit["required"]), filesizeformat(fit["capacity"])
    if status == "does_not_fit":
        return _check(
            MEMORY, False, f"Model requires {need} at n_ctx {fit['n_ctx']}, {have} available"
        )
    return _check(MEMORY, True, f"needs about {need} of {have} at n_ctx {fit['n_ctx']} ({status})")


def _vocabulary_check(model: Model, installation: Installation, op: Operation) -> dict:
    if not model.gguf_file:
        return _check(VOCABULARY, True, "skipped: not a GGUF file")
    store = get_store()
    path = store.snapshot_file(
        installation.location, model.repo_id, installation.commit_hash, model.gguf_file
    )
    with heartbeat_kept(op):
        outcome = vocab_load_check(path)
    message = store.redact(outcome.message)
    return _check(VOCABULARY, outcome.ok, f"skipped: {message}" if outcome.skipped else message)


def _first_failure_error(checks: list[dict], damaged: list[str], model: Model) -> ModelyardError:
    failed = [c for c in checks if not c["passed"]]
    names = {c["name"] for c in failed}
    text = "; ".join(f"{c['name']}: {c['message']}" for c in failed)
    details = {"checks": checks, "damaged_files": damaged}
    if INTEGRITY in names:
        return ChecksumError(f"{model.key} is damaged: {text}", details=details)
    if MEMORY in names:
        return InsufficientRam(f"{model.key} failed verify: {text}", details=details)
    return FormatError(f"{model.key} failed verify: {text}", details=details)


def _record(
    op: Operation, model: Model, checks: list[dict], damaged: list[str], *, verb: str = "verified"
) -> None:
    """Store the checks on the installation, with the verified time or the damaged files;
    record a DAMAGED event, or a VERIFIED one when every check passed."""
    values = {"verify_checks": checks, "damaged_files": damaged}
    if all(c["passed"] for c in checks):
        values["verified_at"] = timezone.now()
    elif damaged:
        values["verified_at"] = None
    Installation.objects.filter(model=model).update(**values)
    if damaged:
        event_record(
            kind=EventKind.DAMAGED,
            message=f"{model.key} is damaged: {', '.join(damaged)} do not match their digests.",
            model=model, operation=op, actor=op.created_by, files=damaged,
        )  # fmt: skip
    elif all(c["passed"] for c in checks):
        event_record(
            kind=EventKind.VERIFIED,
            message=f"{model.key} {verb}: every check passed.",
            model=model, operation=op, actor=op.created_by, checks=checks,
        )  # fmt: skip


@executor(OperationKind.VERIFY)
def verify_execute(op: Operation) -> dict:
    """Run every check; fail with the first failing kind's code, all checks in the details."""
    model = op.model
    installation = _installation(model)
    load = bool(op.plan.get("load")) if isinstance(op.plan, dict) else False
    reporter = ProgressReporter(op)
    targets = _targets(model, installation, installation.files)
    bad = _hash_files(targets, reporter)
    damaged = [path for path, _ in bad]
    checks = [_integrity_check(targets, bad)]
    if (fmt := _format_check(model, installation)) is not None:
        checks.append(fmt)
    checks.append(_memory_check(model))
    if load:
        if damaged:
            checks.append(_check(VOCABULARY, True, "skipped: the files are damaged"))
        else:
            checks.append(_vocabulary_check(model, installation, op))
    _record(op, model, checks, damaged)
    if not all(c["passed"] for c in checks):
        raise _first_failure_error(checks, damaged, model)
    return {"checks": checks, "damaged_files": [], "files": len(targets)}


@executor(OperationKind.REPAIR)
def repair_execute(op: Operation) -> dict:
    """Fetch the damaged files' blobs again at the installed commit, then hash those files."""
    model = op.model
    installation = _installation(model)
    damaged = list(installation.damaged_files)
    if not damaged:
        return {"repaired": [], "note": "nothing was damaged"}
    store = get_store()
    policy = retry_policy()
    reporter = ProgressReporter(op)
    # The installed commit, not the revision: a repair restores what is installed.
    plan = plan_retried(op, policy, reporter, revision=installation.commit_hash)
    files = [f for f in plan.files if f.path in damaged]
    missing = sorted(set(damaged) - {f.path for f in files})
    if missing:
        raise ChecksumError(
            f"{model.key}: the Hub has no {missing[0]} at the installed commit; download the "
            "model again.",
            details={"missing": missing},
        )
    for f in files:
        _, blob_id = store.snapshot_blob(
            installation.location, model.repo_id, installation.commit_hash, f.path
        )
        for bad in {blob_id, f.blob_id} - {None}:
            store.blob_remove(model.repo_id, bad)
    wire_bytes = planned_files_fetch(op, plan, files, reporter=reporter, policy=policy)
    for f in files:
        store.link_snapshot(model.repo_id, plan.commit_hash, f.path, f.blob_id)
    store_reconcile(folders=[repo_folder(model.repo_id)], publish=False)
    installation = _installation(model)
    targets = _targets(model, installation, damaged)
    bad = _hash_files(targets, ProgressReporter(op))
    still = [path for path, _ in bad]
    checks = [c for c in installation.verify_checks if c.get("name") != INTEGRITY]
    checks.insert(0, _integrity_check(targets, bad))
    _record(op, model, checks, still, verb=f"repaired ({', '.join(damaged)} fetched again)")
    if still:
        raise _first_failure_error(checks, still, model)
    return {"repaired": damaged, "wire_bytes": wire_bytes, "checks": checks}
