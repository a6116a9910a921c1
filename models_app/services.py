"""Writes and state changes. Every interface (API, admin, HTMX, CLI, tasks) calls these."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from . import store
from .errors import Incompatible, NotInstalled
from .models import (
    ActiveModel,
    ApiToken,
    Event,
    EventKind,
    Installation,
    Model,
    ModelSource,
    StoreLocation,
    StoreScan,
    UnmanagedRepo,
    token_digest,
)
from .registry import load_registry, registry_paths

logger = logging.getLogger(__name__)


def event_record(*, kind: str, message: str, model=None, operation=None, actor=None, **data):
    """Write one audit Event."""
    return Event.objects.create(
        kind=kind,
        message=message,
        model=model,
        operation=operation,
        actor=actor if actor is not None and actor.is_authenticated else None,
        error_code=data.pop("error_code", ""),
        data=data,
    )


# --- registry -------------------------------------------------------------------------


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.retired)} no longer curated, "
            f"{len(self.removed)} removed"
        )


def registry_sync(*, paths: list[Path] | None = None) -> SyncResult:
    """Upsert the curated registry into the database; idempotent.

    Curated entries that left the YAML files are deleted, unless installed or used
    by a collection: those stay, marked no longer in the registry. Custom entries
    are never touched. The files are validated completely before any write.
    """
    if paths is None:
        paths = registry_paths(
            registry_dir=settings.REGISTRY_DIR, extra_files=settings.MODEL_REGISTRY_FILES
        )
    entries = load_registry(paths)
    result = SyncResult()
    wanted = {e.key: e for e in entries}
    with transaction.atomic():
        existing = {m.key: m for m in Model.objects.filter(key__in=wanted)}
        for key, entry in wanted.items():
            values = entry.model_fields_for_db() | {
                "source": ModelSource.CURATED,
                "in_registry": True,
                "registry_file": _relative_to_project(entry.registry_file),
            }
            row = existing.get(key)
            if row is None:
                Model.objects.create(key=key, **values)
                result.created.append(key)
                continue
            changed = [name for name, value in values.items() if getattr(row, name) != value]
            if changed:
                for name in changed:
                    setattr(row, name, values[name])
                row.save(update_fields=[*changed, "updated_at"])
                result.updated.append(key)
            else:
                result.unchanged.append(key)

        gone = Model.objects.filter(source=ModelSource.CURATED, in_registry=True).exclude(
            key__in=wanted
        )
        for row in gone:
            if Installation.objects.filter(model=row).exists() or row.collections.exists():
                row.in_registry = False
                row.save(update_fields=["in_registry", "updated_at"])
                result.retired.append(row.key)
                continue
            try:
                with transaction.atomic():
                    row.delete()
                result.removed.append(row.key)
            except ProtectedError:
                row.in_registry = False
                row.save(update_fields=["in_registry", "updated_at"])
                result.retired.append(row.key)
        if result.created or result.updated or result.retired or result.removed:
            event_record(
                kind=EventKind.SYNCED,
                message=f"Registry synced: {result.summary()}.",
                files=[str(p) for p in paths],
                created=result.created,
                updated=result.updated,
                retired=result.retired,
                removed=result.removed,
            )
    return result


def _relative_to_project(path: str) -> str:
    """Return a registry file path relative to the project, so it does not depend on the cwd."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(settings.BASE_DIR).as_posix()
    except ValueError:
        return str(resolved)


# --- installed state ------------------------------------------------------------------


@dataclass
class ReconcileResult:
    installed: list[str] = field(default_factory=list)
    uninstalled: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)
    partial_files: int = 0
    warnings: list[str] = field(default_factory=list)
    scan: StoreScan | None = None

    def summary(self) -> str:
        return (
            f"{len(self.installed)} newly installed, {len(self.uninstalled)} gone, "
            f"{len(self.unmanaged)} unmanaged repos, {self.partial_files} partial files"
        )


def _scan_locations() -> list[tuple[str, Path]]:
    locations = [(StoreLocation.PRIMARY, settings.MODELS_HUB_DIR)]
    legacy = settings.LEGACY_HUB_DIR
    if legacy and legacy.is_dir() and legacy.resolve() != settings.MODELS_HUB_DIR.resolve():
        locations.append((StoreLocation.LEGACY, legacy))
    return locations


def store_reconcile() -> ReconcileResult:
    """Bring Installation, UnmanagedRepo and the cache figures in line with the store on disk.

    The primary store wins over the legacy cache when both hold an entry.
    """
    started = time.monotonic()
    now = timezone.now()
    reports = [(location, store.store_scan(root)) for location, root in _scan_locations()]
    result = ReconcileResult()
    models = list(
        Model.objects.only("id", "key", "repo_id", "revision", "gguf_file", "allow_patterns")
    )
    managed_repo_ids = {m.repo_id for m in models}

    found: dict[int, dict] = {}
    for m in models:
        for location, report in reports:
            repo = report.repo(m.repo_id)
            if repo is None:
                continue
            snapshot = store.pick_snapshot(repo, m.revision, m.file_patterns)
            if snapshot is None:
                continue
            files = snapshot.match(m.file_patterns)
            found[m.id] = {
                "location": location,
                "commit_hash": snapshot.commit_hash,
                "snapshot_path": str(snapshot.path),
                "files": [f.path for f in files],
                # A blob listed twice (same content under two names) is counted once.
                "size_on_disk": sum({f.blob: f.size for f in files}.values()),
                "installed_at": snapshot.last_modified or now,
            }
            break

    primary = reports[0][1]
    managed_bytes = sum(r.size_on_disk for r in primary.repos if r.repo_id in managed_repo_ids)
    unmanaged = [
        (location, r)
        for location, report in reports
        for r in report.repos
        if r.repo_type != "model" or r.repo_id not in managed_repo_ids
    ]

    with transaction.atomic():
        existing = {i.model_id: i for i in Installation.objects.select_for_update()}
        keys = {m.id: m.key for m in models}
        for model_id, values in found.items():
            row = existing.pop(model_id, None)
            if row is None:
                Installation.objects.create(model_id=model_id, reconciled_at=now, **values)
                result.installed.append(keys[model_id])
            else:
                values.pop("installed_at")
                for name, value in values.items():
                    setattr(row, name, value)
                row.reconciled_at = now
                row.save()
        for model_id, row in existing.items():
            row.delete()
            result.uninstalled.append(keys.get(model_id, str(model_id)))

        UnmanagedRepo.objects.all().delete()
        UnmanagedRepo.objects.bulk_create(
            UnmanagedRepo(
                repo_id=r.repo_id,
                repo_type=r.repo_type,
                location=location,
                size_on_disk=r.size_on_disk,
                revisions=[s.commit_hash for s in r.snapshots],
                last_modified=r.last_modified,
                reconciled_at=now,
            )
            for location, r in unmanaged
        )
        result.unmanaged = [r.repo_id for _, r in unmanaged]
        result.partial_files = len(primary.partial_files)
        result.warnings = [w for _, report in reports for w in report.warnings]
        result.scan = StoreScan.objects.create(
            scanned_at=now,
            managed_bytes=managed_bytes,
            unmanaged_bytes=sum(
                r.size_on_disk for loc, r in unmanaged if loc == StoreLocation.PRIMARY
            ),
            unmanaged_count=len(unmanaged),
            partial_bytes=sum(p.size for p in primary.partial_files),
            partial_files=[
                {"path": p.path, "size": p.size, "modified": p.modified.isoformat()}
                for p in primary.partial_files
            ],
            warnings=result.warnings,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        # Keep a short history; reads only ever look at the newest row.
        stale = StoreScan.objects.order_by("-scanned_at", "-id").values_list("id", flat=True)[50:]
        StoreScan.objects.filter(id__in=list(stale)).delete()
        if result.installed or result.uninstalled:
            event_record(
                kind=EventKind.RECONCILED,
                message=f"Store reconciled: {result.summary()}.",
                installed=result.installed,
                uninstalled=result.uninstalled,
            )
    return result


# --- active model ---------------------------------------------------------------------


def model_activate(*, model: Model, type: str | None = None, user=None) -> ActiveModel:
    """Make an installed model the active one for its type and record the switch."""
    if type is not None and type != model.type:
        raise Incompatible(
            f"{model.key} is a {model.type} model and cannot be the active {type} model.",
            details={"model": model.key, "model_type": model.type, "requested_type": type},
        )
    with transaction.atomic():
        # Lock the entry so that a concurrent delete cannot remove it under the switch.
        model = Model.objects.select_for_update().get(pk=model.pk)
        if not Installation.objects.filter(model=model).exists():
            raise NotInstalled(
                f"{model.key} is not installed; download it before activating it.",
                details={"model": model.key},
            )
        previous = (
            ActiveModel.objects.select_for_update().filter(type=model.type).select_related("model")
        ).first()
        if previous is not None and previous.model_id == model.id:
            return previous
        active, _ = ActiveModel.objects.update_or_create(
            type=model.type,
            defaults={"model": model, "activated_by": user if _is_user(user) else None},
        )
        event_record(
            kind=EventKind.SWITCHED,
            message=f"Active {model.type} model is now {model.key}"
            + (f" (was {previous.model.key})." if previous else "."),
            model=model,
            actor=user,
            type=model.type,
            previous=previous.model.key if previous else None,
        )
    return active


def _is_user(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False)


# --- API tokens -----------------------------------------------------------------------


def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Create a token for a user; return the row and the raw token, shown only once."""
    raw = ApiToken.new_raw()
    token = ApiToken.objects.create(user=user, name=name, digest=token_digest(raw), hint=raw[:12])
    return token, raw


def api_token_authenticate(*, raw: str):
    """Return the user a raw token belongs to, or None."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(raw), revoked=False, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    # Write last use at most once a minute so that a busy client does not write per request.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
