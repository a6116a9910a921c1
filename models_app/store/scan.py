"""Read the Hugging Face cache layout through huggingface_hub's scanner, into plain data.

`store_scan` reads a whole cache directory; `repo_scan` reads one repo folder with the
same scanner, so a reconcile after an operation costs one folder, not the whole store.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from huggingface_hub import CachedRepoInfo, scan_cache_dir
from huggingface_hub.errors import CacheNotFound, CorruptedCacheException

# The per-folder step of scan_cache_dir. Private, but it is the very code the public scanner
# runs for each folder, so a one-repo read and a full scan can never disagree; a test pins
# the two to the same answer (tests/models_app/test_store.py).
from huggingface_hub.utils._cache_manager import _scan_cached_repo

# A snapshot without one of these holds configuration only, not a usable model.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".pt", ".pth", ".h5", ".msgpack")


@dataclass(frozen=True)
class StoredFile:
    path: str  # relative to the snapshot, POSIX separators
    blob: Path
    size: int


@dataclass(frozen=True)
class StoredSnapshot:
    commit_hash: str
    refs: frozenset[str]
    path: Path
    files: dict[str, StoredFile]
    last_modified: datetime

    def match(self, patterns: list[str]) -> list[StoredFile]:
        """Return the files matching any pattern, the way hub allow_patterns match."""
        return [f for p, f in sorted(self.files.items()) if path_matches(p, patterns)]


@dataclass(frozen=True)
class StoredRepo:
    repo_id: str
    repo_type: str
    size_on_disk: int
    snapshots: list[StoredSnapshot]
    last_modified: datetime | None


@dataclass(frozen=True)
class PartialFile:
    path: str  # relative to the store root
    repo_folder: str
    size: int
    modified: datetime


@dataclass
class StoreReport:
    root: Path
    repos: list[StoredRepo] = field(default_factory=list)
    partial_files: list[PartialFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def repo(self, repo_id: str, repo_type: str = "model") -> StoredRepo | None:
        for repo in self.repos:
            if repo.repo_id == repo_id and repo.repo_type == repo_type:
                return repo
        return None


def path_matches(path: str, patterns: list[str]) -> bool:
    """Return True if a repo file path matches one of the allow-patterns.

    A trailing slash means "everything below this folder", as on the hub.
    """
    for pattern in patterns:
        if pattern.endswith("/"):
            pattern += "*"
        if fnmatch.fnmatch(path, pattern):
            return True
    return False


def exact_names(patterns: list[str]) -> list[str]:
    """Return the patterns that name one file (no wildcard, not a folder)."""
    return [p for p in patterns if not any(ch in p for ch in "*?[") and not p.endswith("/")]


def _timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


def store_scan(root: Path) -> StoreReport:
    """Scan one cache directory; a missing directory is an empty store."""
    report = StoreReport(root=root)
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return report
    report.warnings = [str(w) for w in info.warnings if not _download_in_progress(w, root)]
    report.repos = [_stored_repo(repo) for repo in info.repos]
    report.repos.sort(key=lambda r: (r.repo_type, r.repo_id))
    for partial in sorted(info.incomplete_files, key=lambda p: str(p.file_path)):
        rel = partial.file_path.relative_to(info.cache_dir)
        try:
            modified = _timestamp(partial.file_path.stat().st_mtime)
        except OSError:
            continue
        report.partial_files.append(
            PartialFile(
                path=rel.as_posix(),
                repo_folder=rel.parts[0],
                size=partial.size_on_disk,
                modified=modified,
            )
        )
    return report


def _stored_repo(repo: CachedRepoInfo) -> StoredRepo:
    snapshots = []
    for rev in repo.revisions:
        files = {}
        for f in rev.files:
            rel = PurePosixPath(f.file_path.relative_to(rev.snapshot_path).as_posix())
            files[str(rel)] = StoredFile(path=str(rel), blob=f.blob_path, size=f.size_on_disk)
        snapshots.append(
            StoredSnapshot(
                commit_hash=rev.commit_hash,
                refs=frozenset(rev.refs),
                path=rev.snapshot_path,
                files=files,
                last_modified=_timestamp(rev.last_modified),
            )
        )
    snapshots.sort(key=lambda s: s.last_modified, reverse=True)
    return StoredRepo(
        repo_id=repo.repo_id,
        repo_type=repo.repo_type,
        size_on_disk=repo.size_on_disk,
        snapshots=snapshots,
        last_modified=_timestamp(repo.last_modified),
    )


def repo_scan(root: Path, folder: str) -> StoreReport:
    """Scan one repo folder of a cache directory; a missing folder is an empty report.

    The report holds that repo (if it has a snapshot) and its partial files, exactly as
    `store_scan` would report them.
    """
    report = StoreReport(root=root)
    path = root / folder
    if not path.is_dir():
        return report
    try:
        report.repos = [_stored_repo(_scan_cached_repo(path))]
    except CorruptedCacheException as exc:
        if not _download_in_progress(exc, root):
            report.warnings = [str(exc)]
    for partial in sorted((path / "blobs").glob("*.incomplete")):
        try:
            stat = partial.stat()
        except OSError:
            continue
        report.partial_files.append(
            PartialFile(
                path=partial.relative_to(root).as_posix(),
                repo_folder=folder,
                size=stat.st_size,
                modified=_timestamp(stat.st_mtime),
            )
        )
    return report


def _download_in_progress(warning: Exception, root: Path) -> bool:
    """Return True for a repo folder that holds only partial blobs: a first download under way.

    huggingface_hub calls such a folder corrupted because it has no snapshots yet.
    """
    for repo_dir in root.iterdir():
        if str(repo_dir) not in str(warning) or (repo_dir / "snapshots").exists():
            continue
        blobs = list((repo_dir / "blobs").glob("*")) if (repo_dir / "blobs").is_dir() else []
        # Partial blobs and their resume sidecars (<blob>.incomplete.json) only.
        return all(".incomplete" in b.name for b in blobs)
    return False


def pick_snapshot(repo: StoredRepo, revision: str, patterns: list[str]) -> StoredSnapshot | None:
    """Return the snapshot that holds an entry: the one its revision points at, else the newest.

    A snapshot qualifies only if it holds the entry's files (every file a pattern names
    exactly: each shard of a split GGUF) and at least one weights file.
    """
    exact = exact_names(patterns)

    def complete(snapshot: StoredSnapshot) -> bool:
        if any(name not in snapshot.files for name in exact):
            return False
        matched = snapshot.match(patterns)
        return any(f.path.endswith(WEIGHT_SUFFIXES) for f in matched)

    preferred = [s for s in repo.snapshots if revision in s.refs or s.commit_hash == revision]
    others = [s for s in repo.snapshots if s not in preferred]
    for snapshot in preferred + others:
        if complete(snapshot):
            return snapshot
    return None
