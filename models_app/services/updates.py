"""Update check and update (Papin's "Update", the Vibrant spec's weekly check).

The check compares the installed snapshot with the Hub's current commit of the entry's
revision, file by file among the entry's own patterns: an update is available only when
one of those files changed (its blob id or sha256), or one was added or removed; a new
README is not an update. An entry pinned to a commit (its revision is a 40-hex sha)
never has one, and the Hub is not asked. The update operation fetches only the blobs the
store lacks (the changed ones), links the new snapshot, switches refs/<revision> to the
new commit atomically, then removes the old snapshot's files and every blob nothing
points at any more.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from .. import hub, selectors
from ..errors import InvalidState, ModelyardError, NotInstalled
from ..executors import executor
from ..models import (
    EventKind,
    Installation,
    Model,
    ModelSource,
    Operation,
    OperationKind,
    StoreLocation,
)
from ..store import get_store, repo_folder
from .downloads import plan_retried, planned_files_fetch, retry_policy
from .events import event_record
from .model_facts import model_facts_ensure
from .operations import StartResult, operation_start
from .progress import ProgressReporter, heartbeat_kept
from .reconcile import store_reconcile

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def revision_pinned(model: Model) -> bool:
    """Return True when the entry's revision is a commit sha: it never moves."""
    return bool(_COMMIT.match(model.revision or ""))


def _never_updates(model: Model) -> tuple[str, str] | None:
    """Return (status, reason) for an entry the Hub is never asked about, else None."""
    if model.source == ModelSource.LOCAL:
        return "local", "imported from disk: there is no Hub repo to ask"
    if revision_pinned(model):
        return "pinned", f"pinned to commit {model.revision[:12]}: it never changes"
    return None


@dataclass
class UpdateCheck:
    """What one check found: `available` when a file the entry uses changed on the Hub."""

    model: str
    available: bool
    installed_commit: str
    hub_commit: str | None  # None: not asked (pinned)
    files: list[dict] = field(default_factory=list)  # {path, change: changed|added|removed}
    checked_at: datetime | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "available": self.available,
            "installed_commit": self.installed_commit,
            "hub_commit": self.hub_commit,
            "files": self.files,
            "checked_at": self.checked_at,
            "reason": self.reason,
        }


def _installed(model: Model) -> Installation:
    installation = Installation.objects.filter(model=model).first()
    if installation is None:
        raise NotInstalled(
            f"{model.key} is not installed; there is nothing to update.",
            details={"model": model.key},
        )
    return installation


def _installed_blobs(model: Model, installation: Installation) -> dict[str, str | None]:
    """Return each installed file's blob id (path -> id), from the snapshot's links."""
    store = get_store()
    blobs = {}
    for path in installation.files:
        try:
            _, blob_id = store.snapshot_blob(
                installation.location, model.repo_id, installation.commit_hash, path
            )
        except ValueError:
            blob_id = None
        blobs[path] = blob_id
    return blobs


def _changes(installed: dict[str, str | None], plan: hub.DownloadPlan) -> list[dict]:
    """Return the entry's files that differ between the installed snapshot and the plan."""
    planned = {f.path: f.blob_id for f in plan.files}
    changes = [
        {"path": path, "change": "changed"}
        for path, blob_id in planned.items()
        if path in installed and installed[path] != blob_id
    ]
    changes += [{"path": p, "change": "added"} for p in planned if p not in installed]
    changes += [{"path": p, "change": "removed"} for p in installed if p not in planned]
    return sorted(changes, key=lambda c: c["path"])


def update_check(*, model: Model) -> UpdateCheck:
    """Ask the Hub whether a file this installed entry uses changed; record the answer.

    The answer goes to Installation.update_checked_at / update_commit / update_files; an
    UPDATE_AVAILABLE event is recorded the first time a commit is found. Raise NotInstalled,
    or the Hub's error (ERR_NETWORK, ERR_NOT_FOUND, ...).
    """
    installation = _installed(model)
    now = timezone.now()
    result = UpdateCheck(
        model=model.key,
        available=False,
        installed_commit=installation.commit_hash,
        hub_commit=None,
        checked_at=now,
    )
    if never := _never_updates(model):
        result.reason = never[1]
        Installation.objects.filter(pk=installation.pk).update(
            update_checked_at=now, update_commit="", update_files=[]
        )
        return result
    plan = hub.plan_download(
        repo_id=model.repo_id,
        revision=model.revision,
        patterns=model.file_patterns,
        endpoint=settings.HF_ENDPOINT,
        token=settings.HF_TOKEN,
    )
    result.hub_commit = plan.commit_hash
    if plan.commit_hash != installation.commit_hash:
        result.files = _changes(_installed_blobs(model, installation), plan)
    result.available = bool(result.files)
    if not result.available:
        result.reason = (
            "up to date"
            if plan.commit_hash == installation.commit_hash
            else f"the Hub's commit {plan.commit_hash[:12]} changes none of its files"
        )
        Installation.objects.filter(pk=installation.pk).update(
            update_checked_at=now, update_commit="", update_files=[]
        )
        return result
    names = ", ".join(f"{c['path']} ({c['change']})" for c in result.files)
    result.reason = f"commit {plan.commit_hash[:12]} changes {names}"
    Installation.objects.filter(pk=installation.pk).update(
        update_checked_at=now, update_commit=plan.commit_hash, update_files=result.files
    )
    if installation.update_commit != plan.commit_hash:
        event_record(
            kind=EventKind.UPDATE_AVAILABLE,
            message=f"Update available for {model.key}: {result.reason}.",
            model=model,
            commit=plan.commit_hash,
            files=result.files,
        )
    return result


def update_checks_due(*, now: datetime | None = None) -> dict:
    """Check every installed entry whose last check is older than UPDATE_CHECK_INTERVAL.

    The schedule's body (models_app.tasks.update_check). 0 turns the checks off. A failing
    check (the Hub away) is logged and counted; the others go on.
    """
    interval = settings.UPDATE_CHECK_INTERVAL
    if interval <= 0:
        return {"checked": 0, "available": 0, "failed": 0, "note": "UPDATE_CHECK_INTERVAL is 0"}
    now = now or timezone.now()
    due = (
        Model.objects.filter(installation__location=StoreLocation.PRIMARY)
        .exclude(source=ModelSource.LOCAL)  # nothing on the Hub to compare with
        .exclude(installation__update_checked_at__gt=now - timedelta(seconds=interval))
        .order_by("key")
    )
    counts = {"checked": 0, "available": 0, "failed": 0}
    for model in due:
        try:
            found = update_check(model=model)
        except ModelyardError as exc:
            logger.warning("update check of %s failed: %s: %s", model.key, exc.code, exc.message)
            counts["failed"] += 1
            continue
        counts["checked"] += 1
        counts["available"] += found.available
    return counts


def update_start(*, model: Model, user=None) -> StartResult:
    """Queue an update of an installed entry (nothing to do for one pinned to a commit)."""

    def updatable() -> StartResult | None:
        installation = _installed(model)
        if installation.location != StoreLocation.PRIMARY:
            raise InvalidState(
                f"{model.key} lives in the read-only legacy cache; Modelyard does not update "
                "there.",
                details={"model": model.key},
            )
        if never := _never_updates(model):
            status, reason = never
            return StartResult(None, False, f"{model.key} has no updates: {reason}.", status)
        return None

    return operation_start(model=model, kind=OperationKind.UPDATE, user=user, unless=updatable)


@executor(OperationKind.UPDATE)
def update_execute(op: Operation) -> dict:
    """Fetch the changed blobs, link the new snapshot, switch the ref, drop the old files."""
    model = op.model
    store = get_store()
    installation = _installed(model)
    old_commit = installation.commit_hash
    policy = retry_policy()
    reporter = ProgressReporter(op)
    started = time.monotonic()
    plan = plan_retried(op, policy, reporter)
    if plan.commit_hash == old_commit:
        Installation.objects.filter(pk=installation.pk).update(update_commit="", update_files=[])
        return {"commit": old_commit, "changed": [], "wire_bytes": 0, "note": "up to date"}
    changes = _changes(_installed_blobs(model, installation), plan)
    wire_bytes = planned_files_fetch(op, plan, plan.files, reporter=reporter, policy=policy)
    for f in plan.files:
        store.link_snapshot(model.repo_id, plan.commit_hash, f.path, f.blob_id)
    store.write_ref(model.repo_id, model.revision, plan.commit_hash)  # tmp file + os.replace
    removal = store.plan_snapshot_removal(
        model.repo_id, old_commit, model.file_patterns, selectors.repo_stakeholders(model)
    )
    with heartbeat_kept(op):
        removal.execute()
    store_reconcile(folders=[repo_folder(model.repo_id)], publish=False)
    refetched = {c["path"] for c in changes}
    Installation.objects.filter(model=model).update(
        update_commit="",
        update_files=[],
        update_checked_at=timezone.now(),
        verified_at=timezone.now(),
        damaged_files=[p for p in installation.damaged_files if p not in refetched],
    )
    if model.gguf_file:
        model.refresh_from_db(fields=["gguf_facts"])
        model_facts_ensure(model=model, commit_hash=plan.commit_hash)
    return {
        "commit": plan.commit_hash,
        "previous_commit": old_commit,
        "changed": changes,
        "wire_bytes": wire_bytes,
        "bytes_freed": removal.bytes_freed,
        "seconds": round(time.monotonic() - started, 3),
    }
