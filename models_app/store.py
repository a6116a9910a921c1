"""The models store on disk: the Hugging Face cache layout, read through huggingface_hub.

Nothing above this module knows paths. `store_scan` turns a cache directory into
plain data that the reconcile service compares with the database.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from huggingface_hub import scan_cache_dir
from huggingface_hub.errors import CacheNotFound

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
    for repo in info.repos:
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
        report.repos.append(
            StoredRepo(
                repo_id=repo.repo_id,
                repo_type=repo.repo_type,
                size_on_disk=repo.size_on_disk,
                snapshots=snapshots,
                last_modified=_timestamp(repo.last_modified),
            )
        )
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

    A snapshot qualifies only if it holds the entry's files and at least one weights file.
    """

    def complete(snapshot: StoredSnapshot) -> bool:
        matched = snapshot.match(patterns)
        return any(f.path.endswith(WEIGHT_SUFFIXES) for f in matched)

    preferred = [s for s in repo.snapshots if revision in s.refs or s.commit_hash == revision]
    others = [s for s in repo.snapshots if s not in preferred]
    for snapshot in preferred + others:
        if complete(snapshot):
            return snapshot
    return None


def disk_usage(root: Path) -> tuple[int, int]:
    """Return (total, free) bytes of the filesystem holding root (or its nearest parent)."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return usage.total, usage.free


def ensure_store(root: Path) -> None:
    """Create the store directory so that tools pointed at it find a cache."""
    os.makedirs(root, exist_ok=True)


# --- writing the cache layout -----------------------------------------------------------


def repo_dir(root: Path, repo_id: str, repo_type: str = "model") -> Path:
    return root / (f"{repo_type}s--" + repo_id.replace("/", "--"))


def blob_path(root: Path, repo_id: str, blob_id: str) -> Path:
    return repo_dir(root, repo_id) / "blobs" / blob_id


def partial_path(root: Path, repo_id: str, blob_id: str) -> Path:
    """Return the stable partial file of a blob, so any later process resumes it."""
    return repo_dir(root, repo_id) / "blobs" / f"{blob_id}.incomplete"


def partial_size(root: Path, repo_id: str, blob_id: str) -> int:
    try:
        return partial_path(root, repo_id, blob_id).stat().st_size
    except FileNotFoundError:
        return 0


def prepare_repo(root: Path, repo_id: str) -> None:
    """Create blobs/ and snapshots/ so that a scan during a first download sees a valid repo."""
    base = repo_dir(root, repo_id)
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    (base / "snapshots").mkdir(parents=True, exist_ok=True)


def link_snapshot(root: Path, repo_id: str, commit_hash: str, path: str, blob_id: str) -> None:
    """Point snapshots/<commit>/<path> at its blob with a relative symlink, as the hub does."""
    base = repo_dir(root, repo_id)
    link = base / "snapshots" / commit_hash / PurePosixPath(path)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(base / "blobs" / blob_id, link.parent)
    tmp = link.with_name(f".{link.name}.link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic: a reader never sees a missing or half-made link


def write_ref(root: Path, repo_id: str, revision: str, commit_hash: str) -> None:
    """Record which commit a branch or tag name points at (refs/<revision>)."""
    if revision == commit_hash:
        return
    ref = repo_dir(root, repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.tmp")
    tmp.write_text(commit_hash)
    os.replace(tmp, ref)


def stale_partials(root: Path, *, older_than: datetime, keep: set[str]) -> list[Path]:
    """Return partial files and sidecars written before a time, except for kept blob ids."""
    stale = []
    for path in root.glob("*/blobs/*.incomplete*"):
        blob_id = path.name.split(".incomplete", 1)[0]
        if blob_id in keep:
            continue
        try:
            modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        except FileNotFoundError:
            continue
        if modified < older_than:
            stale.append(path)
    return stale


# --- removing from the store ------------------------------------------------------------


@dataclass
class Removal:
    """What deleting one entry removes from the store, and the bytes that really frees.

    A blob still referenced by something that stays (another revision, another entry's
    file in the same repo, another repo) is not counted and not removed.
    """

    repo_id: str
    repo_type: str = "model"
    bytes_freed: int = 0
    partial_bytes: int = 0
    files: list[Path] = field(default_factory=list)  # snapshot entries to unlink
    blobs: list[Path] = field(default_factory=list)
    partials: list[Path] = field(default_factory=list)
    strategy: object | None = None  # huggingface_hub's DeleteCacheStrategy, whole-repo case

    def execute(self, root: Path) -> None:
        if self.strategy is not None:
            self.strategy.execute()
        for path in self.files:
            path.unlink(missing_ok=True)
        for path in self.blobs:
            path.unlink(missing_ok=True)
        for path in self.partials:
            path.unlink(missing_ok=True)
        _prune_empty_dirs(repo_dir(root, self.repo_id, self.repo_type) / "snapshots")


def _prune_empty_dirs(top: Path) -> None:
    if not top.is_dir():
        return
    for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def plan_removal(
    root: Path,
    repo_id: str,
    patterns: list[str],
    keep_patterns: list[list[str]],
    repo_type: str = "model",
) -> Removal:
    """Plan removing an entry's files from the primary store.

    With no other installed entry in the repo, the whole repo goes through
    huggingface_hub's cache deletion (revisions, then blobs no other revision uses).
    Otherwise only this entry's snapshot files go, and a blob only when nothing kept
    still points at it (a GGUF repo holding a Q4 and a Q5 entry).
    """
    removal = Removal(repo_id=repo_id, repo_type=repo_type)
    base = repo_dir(root, repo_id, repo_type)
    if not keep_patterns and base.is_dir():
        # Nobody else has a stake in the repo: its partial files go too. With a stake
        # (another entry installed or downloading), a partial may be that entry's.
        removal.partials = sorted((base / "blobs").glob("*.incomplete*"))
        removal.partial_bytes = sum(p.stat().st_size for p in removal.partials if p.exists())
    try:
        info = scan_cache_dir(root)
    except CacheNotFound:
        return removal
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
    if repo is None:
        return removal
    if not keep_patterns:
        # delete_revisions matches commit hashes across every repo in the cache; a fork or
        # mirror shares them. Scope it to this one repo.
        only_this = replace(info, repos=frozenset({repo}))
        strategy = only_this.delete_revisions(*(rev.commit_hash for rev in repo.revisions))
        removal.strategy = strategy
        removal.bytes_freed = strategy.expected_freed_size
        return removal

    def rel(file, rev) -> str:
        return file.file_path.relative_to(rev.snapshot_path).as_posix()

    kept_blobs = set()
    doomed: dict[Path, int] = {}
    for rev in repo.revisions:
        for f in rev.files:
            path = rel(f, rev)
            mine = path_matches(path, patterns)
            theirs = any(path_matches(path, keep) for keep in keep_patterns)
            if mine and not theirs:
                removal.files.append(f.file_path)
                doomed[f.blob_path] = f.size_on_disk
            else:
                kept_blobs.add(f.blob_path)
    removal.blobs = sorted(b for b in doomed if b not in kept_blobs)
    removal.bytes_freed = sum(doomed[b] for b in removal.blobs)
    return removal
