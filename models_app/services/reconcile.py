"""Reconcile installed state with the models store on disk: the whole store, or some repos.

The full rescan runs at start, on the schedule and from the button; after an operation
only the repo folders it touched are read, and the cache figures are the last scan's
with those folders' share replaced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import EventKind, Installation, Model, StoreLocation, StoreScan, UnmanagedRepo
from ..selectors import busy_model_ids, latest_scan
from ..store import StoredRepo, StoreReport, get_store, pick_snapshot, repo_folder
from .events import event_record, store_change_publish
from .model_facts import model_facts_ensure

SCAN_HISTORY = 50


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


def _reports(folders: list[str] | None) -> list[tuple[str, StoreReport]]:
    """Return one report per location: of the whole store, or of these folders only."""
    store = get_store()
    if folders is None:
        return store.scan()
    merged: dict[str, StoreReport] = {}
    for folder in folders:
        for location, report in store.scan_repo_folder(folder):
            into = merged.setdefault(location, StoreReport(root=report.root))
            into.repos += report.repos
            into.partial_files += report.partial_files
            into.warnings += report.warnings
    return list(merged.items())


def _shards_missing(model: Model, repo: StoredRepo) -> list[str]:
    """Return a warning when a snapshot holds some shards of a split GGUF entry, not all.

    It names the repo folder, as every warning of a scoped reconcile does (the next scoped
    reconcile of that folder replaces it).
    """
    shards = model.file_patterns
    if not model.gguf_file or len(shards) < 2:
        return []
    best = max(repo.snapshots, key=lambda s: sum(name in s.files for name in shards), default=None)
    present = [name for name in shards if best is not None and name in best.files]
    if not present:
        return []
    missing = [name for name in shards if name not in present]
    return [
        f"{repo_folder(model.repo_id)}: {model.key} is incomplete: {len(present)} of "
        f"{len(shards)} shards ({missing[0]} is missing); not installed until every shard "
        "is there (download it again)."
    ]


def store_reconcile(*, folders: list[str] | None = None, publish: bool = True) -> ReconcileResult:
    """Bring Installation, UnmanagedRepo and the cache figures in line with the store on disk.

    `folders` limits it to those repo folders (what one operation touched); without a
    previous scan to carry the other figures from, it scans the whole store. The primary
    store wins over the legacy cache when both hold an entry. Then publish the state of
    the models it changed and the cache figures, unless `publish` is False: an operation
    publishes its outcome after its end state instead.
    """
    started = time.monotonic()
    now = timezone.now()
    previous = latest_scan() if folders is not None else None
    if previous is None or (previous.managed_bytes and not previous.repo_sizes):
        folders = None  # nothing (or a scan older than repo_sizes) to carry figures from
    scope = set(folders) if folders is not None else None
    reports = _reports(folders)
    result = ReconcileResult()
    models = Model.objects.only(
        "id", "key", "repo_id", "revision", "gguf_file", "allow_patterns", "download_size",
        "gguf_facts",
    )  # fmt: skip
    if scope is not None:
        repo_ids = [get_store().folder_repo(folder)[1] for folder in scope]
        models = models.filter(repo_id__in=repo_ids)
    models = list(models)
    managed_repo_ids = {m.repo_id for m in models}

    found: dict[int, dict] = {}
    incomplete: list[str] = []  # split GGUF entries with some shards only: not installed
    for m in models:
        for location, report in reports:
            repo = report.repo(m.repo_id)
            if repo is None:
                continue
            snapshot = pick_snapshot(repo, m.revision, m.file_patterns)
            if snapshot is None:
                incomplete += _shards_missing(m, repo)
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

    primary = dict(reports).get(StoreLocation.PRIMARY) or StoreReport(root=get_store().hub_dir)
    repo_sizes = {} if scope is None else dict(previous.repo_sizes)
    for folder in scope or ():
        repo_sizes.pop(folder, None)
    for r in primary.repos:
        if r.repo_type == "model" and r.repo_id in managed_repo_ids:
            repo_sizes[repo_folder(r.repo_id, r.repo_type)] = r.size_on_disk
    unmanaged = [
        (location, r)
        for location, report in reports
        for r in report.repos
        if r.repo_type != "model" or r.repo_id not in managed_repo_ids
    ]
    partial_files = [
        {"path": p.path, "size": p.size, "modified": p.modified.isoformat()}
        for p in primary.partial_files
    ]
    warnings = [w for _, report in reports for w in report.warnings] + incomplete
    if scope is not None:
        # The other folders' partial files and warnings stay as the last scan saw them.
        partial_files = [
            p for p in previous.partial_files if p["path"].split("/", 1)[0] not in scope
        ] + partial_files
        partial_files.sort(key=lambda p: p["path"])
        warnings = [w for w in previous.warnings if not any(f in w for f in scope)] + warnings

    with transaction.atomic():
        installations = Installation.objects.select_for_update()
        if scope is not None:
            installations = installations.filter(model__in=[m.id for m in models])
        existing = {i.model_id: i for i in installations}
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
                # Only what the scan knows: the last verify and update check stay.
                row.save(update_fields=[*values, "reconciled_at"])
        for model_id, row in existing.items():
            row.delete()
            result.uninstalled.append(keys.get(model_id, str(model_id)))

        stale_unmanaged = UnmanagedRepo.objects.all()
        if scope is not None:
            in_scope = Q(pk__in=[])
            for folder in scope:
                repo_type, repo_id = get_store().folder_repo(folder)
                in_scope |= Q(repo_type=repo_type, repo_id=repo_id)
            stale_unmanaged = stale_unmanaged.filter(in_scope)
        stale_unmanaged.delete()
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
        result.partial_files = len(partial_files)
        result.warnings = warnings
        unmanaged_rows = UnmanagedRepo.objects.values_list("location", "size_on_disk")
        result.scan = StoreScan.objects.create(
            scanned_at=now,
            scope="full" if scope is None else ",".join(sorted(scope))[:300],
            managed_bytes=sum(repo_sizes.values()),
            repo_sizes=repo_sizes,
            unmanaged_bytes=sum(
                size for loc, size in unmanaged_rows if loc == StoreLocation.PRIMARY
            ),
            unmanaged_count=len(unmanaged_rows),
            partial_bytes=sum(p["size"] for p in partial_files),
            partial_files=partial_files,
            warnings=warnings,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        # Keep a short history; reads only ever look at the newest row.
        stale = StoreScan.objects.order_by("-scanned_at", "-id").values_list("id", flat=True)
        StoreScan.objects.filter(id__in=list(stale[SCAN_HISTORY:])).delete()
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
    # The header of each installed GGUF whose facts are not yet from its file at this commit
    # (newly installed, updated, or installed before facts were read): ram_required follows.
    for m in models:
        if m.gguf_file and m.id in found:
            model_facts_ensure(model=m, commit_hash=found[m.id]["commit_hash"])
    return result
