"""Plan and carry out removing one entry (or one whole repo) from the models store.

Only the repo's own folder is read: a delete preflight costs the same with 5 or with 500
repos in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HFCacheInfo
from huggingface_hub.errors import CorruptedCacheException
from huggingface_hub.utils._cache_manager import _scan_cached_repo

from .scan import path_matches


@dataclass
class Removal:
    """What deleting one entry removes from the store, and the bytes that really frees.

    A blob still referenced by something that stays (another revision, another entry's
    file in the same repo, another repo) is not counted and not removed.
    """

    repo_folder: Path
    bytes_freed: int = 0
    partial_bytes: int = 0
    files: list[Path] = field(default_factory=list)  # snapshot entries to unlink
    blobs: list[Path] = field(default_factory=list)
    partials: list[Path] = field(default_factory=list)
    strategy: object | None = None  # huggingface_hub's DeleteCacheStrategy, whole-repo case

    def execute(self) -> None:
        if self.strategy is not None:
            self.strategy.execute()
        for path in self.files:
            path.unlink(missing_ok=True)
        for path in self.blobs:
            path.unlink(missing_ok=True)
        for path in self.partials:
            path.unlink(missing_ok=True)
        _prune_empty_dirs(self.repo_folder / "snapshots")


def _prune_empty_dirs(top: Path) -> None:
    if not top.is_dir():
        return
    for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def plan_removal(base: Path, patterns: list[str], keep_patterns: list[list[str]]) -> Removal:
    """Plan removing an entry's files from one repo folder of the primary store.

    With no other installed entry in the repo, the whole repo goes through
    huggingface_hub's cache deletion (revisions, then blobs no other revision uses).
    Otherwise only this entry's snapshot files go, and a blob only when nothing kept
    still points at it (a GGUF repo holding a Q4 and a Q5 entry).
    """
    removal = Removal(repo_folder=base)
    if not base.is_dir():
        return removal
    if not keep_patterns:
        # Nobody else has a stake in the repo: its partial files go too. With a stake
        # (another entry installed or downloading), a partial may be that entry's.
        removal.partials = sorted((base / "blobs").glob("*.incomplete*"))
        removal.partial_bytes = sum(p.stat().st_size for p in removal.partials if p.exists())
    try:
        repo = _scan_cached_repo(base)
    except CorruptedCacheException:
        return removal  # partial blobs only: a first download under way, nothing installed
    if not keep_patterns:
        # A cache of this one repo: delete_revisions matches commit hashes across every repo
        # it holds, and a fork or mirror elsewhere in the store shares them.
        only_this = HFCacheInfo(
            size_on_disk=repo.size_on_disk,
            repos=frozenset({repo}),
            incomplete_files=frozenset(),
            warnings=[],
        )
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


def plan_snapshot_removal(
    base: Path, commit_hash: str, patterns: list[str], keep_patterns: list[list[str]]
) -> Removal:
    """Plan removing an entry's files from one snapshot of a repo folder (an old commit).

    With no other entry in the repo (`keep_patterns` empty) the whole snapshot goes; else
    only the files this entry matches and no other does. A blob is removed only when no
    file left in any snapshot still points at it.
    """
    removal = Removal(repo_folder=base)
    snapshot = base / "snapshots" / commit_hash
    if not snapshot.is_dir() or not commit_hash or "/" in commit_hash or commit_hash[0] == ".":
        return removal
    try:
        repo = _scan_cached_repo(base)
    except CorruptedCacheException:
        return removal
    doomed: dict[Path, int] = {}
    kept_blobs = set()
    for rev in repo.revisions:
        for f in rev.files:
            path = f.file_path.relative_to(rev.snapshot_path).as_posix()
            old = rev.commit_hash == commit_hash
            mine = not keep_patterns or (
                path_matches(path, patterns)
                and not any(path_matches(path, keep) for keep in keep_patterns)
            )
            if old and mine:
                removal.files.append(f.file_path)
                doomed[f.blob_path] = f.size_on_disk
            else:
                kept_blobs.add(f.blob_path)
    removal.blobs = sorted(b for b in doomed if b not in kept_blobs)
    removal.bytes_freed = sum(doomed[b] for b in removal.blobs)
    return removal
