"""Installed state: reconcile the database with the models store on disk."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import store
from ..models import EventKind, Installation, Model, StoreLocation, StoreScan, UnmanagedRepo
from ..selectors import busy_model_ids
from .events import event_record, store_change_publish


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


def store_reconcile(*, publish: bool = True) -> ReconcileResult:
    """Bring Installation, UnmanagedRepo and the cache figures in line with the store on disk.

    The primary store wins over the legacy cache when both hold an entry. Then publish
    the state of the models it changed and the cache figures, unless `publish` is False:
    an operation publishes its outcome after its end state instead.
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
        changed = set(existing) ^ set(found)
        changed |= {
            model_id
            for model_id, row in existing.items()
            if model_id in found and row.size_on_disk != found[model_id]["size_on_disk"]
        }
        for model_id, values in found.items():
            row = existing.pop(model_id, None)
            if row is None:
                # Two operations ending together both reconcile: on PostgreSQL the loser of
                # that race would hit the unique model_id; update_or_create re-reads instead.
                installed_at = values.pop("installed_at")
                Installation.objects.update_or_create(
                    model_id=model_id,
                    defaults={**values, "reconciled_at": now},
                    create_defaults={**values, "reconciled_at": now, "installed_at": installed_at},
                )
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
        if publish:
            # A model whose operation runs gets its new state after that operation's end
            # state (operation_outcome_publish); the others now.
            quiet = changed - busy_model_ids(changed)
            transaction.on_commit(lambda: store_change_publish(model_ids=quiet))
    return result
