"""The Store: the one owner of the models directory, the legacy cache and every path in them.

Built once from settings (`get_store()`); services and selectors ask it, and never join a
path or read a MODELS_* setting themselves. Repos are named by repo id and type, blobs by
their id; what comes back up is plain data, sizes and names relative to the store.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from . import local
from .local import ExportFile, LocalPath, SourceFile
from .removal import Removal, plan_removal, plan_snapshot_removal
from .scan import StoreReport, repo_scan, store_scan

PRIMARY, LEGACY = "primary", "legacy"  # StoreLocation's values; models.py imports nothing here

# An absolute POSIX path not inside a URL: "/a/b" after a space, a quote or the start.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"]+/)+([^\s/'\",;)]*)")


def repo_folder(repo_id: str, repo_type: str = "model") -> str:
    """Return the cache folder name of a repo (models--org--name)."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


@dataclass(frozen=True)
class Store:
    hub_dir: Path  # MODELS_DIR/hub: the primary store, read and written
    legacy_dir: Path | None = None  # a second cache, read only
    quota_bytes: int | None = None  # MODELS_MAX_BYTES: what the store may hold at most
    min_free_bytes: int = 0  # MIN_FREE_BYTES: free disk prune keeps on its filesystem
    import_roots: tuple[Path, ...] = ()  # IMPORT_ROOTS: where imports may read (none: off)
    export_roots: tuple[Path, ...] = ()  # EXPORT_ROOTS: where exports may write (none: off)

    # --- where things are ---------------------------------------------------------------

    def locations(self) -> list[tuple[str, Path]]:
        """Return the caches reconcile reads: the store, then the legacy cache if it exists."""
        found = [(PRIMARY, self.hub_dir)]
        legacy = self.legacy_dir
        if legacy and legacy.is_dir() and legacy.resolve() != self.hub_dir.resolve():
            found.append((LEGACY, legacy))
        return found

    def _repo(self, repo_id: str, repo_type: str = "model") -> Path:
        return self.hub_dir / repo_folder(repo_id, repo_type)

    def blob_path(self, repo_id: str, blob_id: str) -> Path:
        """Return where a verified blob lives (fetch writes it there by atomic rename)."""
        return self._repo(repo_id) / "blobs" / blob_id

    def partial_path(self, repo_id: str, blob_id: str) -> Path:
        """Return the stable partial file of a blob, so any later process resumes it."""
        return self._repo(repo_id) / "blobs" / f"{blob_id}.incomplete"

    def has_blob(self, repo_id: str, blob_id: str) -> bool:
        return self.blob_path(repo_id, blob_id).exists()

    def partial_size(self, repo_id: str, blob_id: str) -> int:
        try:
            return self.partial_path(repo_id, blob_id).stat().st_size
        except FileNotFoundError:
            return 0

    def snapshot_file(self, location: str, repo_id: str, commit_hash: str, path: str) -> Path:
        """Return an installed file of a snapshot (the link the hub layout points at its blob).

        `location` is an Installation's (the store or the legacy cache); `path` a file of
        the repo, relative and inside it. Raise ValueError for anything else.
        """
        root = self.legacy_dir if location == LEGACY else self.hub_dir
        relative = PurePosixPath(path)
        if root is None or relative.is_absolute() or ".." in relative.parts or not path:
            raise ValueError(f"no such snapshot file: {path!r} in {location}")
        return root / repo_folder(repo_id) / "snapshots" / commit_hash / relative

    def snapshot_blob(
        self, location: str, repo_id: str, commit_hash: str, path: str
    ) -> tuple[Path, str | None]:
        """Return an installed file to read and the id of the blob its link points at.

        The blob id is the name the file was stored under (the LFS sha256, or the git blob
        id of a small file): the digest recorded at download. None for a plain file that
        is not a link into blobs/. Raise ValueError as `snapshot_file` does.
        """
        link = self.snapshot_file(location, repo_id, commit_hash, path)
        if not link.is_symlink():
            return link, None
        target = Path(os.path.normpath(link.parent / os.readlink(link)))
        return link, target.name if target.parent.name == "blobs" else None

    def relative(self, path: Path | str) -> str:
        """Return a path inside the store as the store-relative POSIX name clients see."""
        return Path(path).relative_to(self.hub_dir).as_posix()

    # --- reading ------------------------------------------------------------------------

    def scan(self) -> list[tuple[str, StoreReport]]:
        """Scan every location whole (start, the schedule, the button)."""
        return [(location, store_scan(root)) for location, root in self.locations()]

    def scan_repo_folder(self, folder: str) -> list[tuple[str, StoreReport]]:
        """Scan one repo folder (`repo_folder()`) in every location, after an operation."""
        return [(location, repo_scan(root, folder)) for location, root in self.locations()]

    @staticmethod
    def folder_repo(folder: str) -> tuple[str, str]:
        """Return (repo type, repo id) of a repo folder name: the inverse of repo_folder()."""
        plural, _, name = folder.partition("--")
        # Hub repo names never hold "--", so every "--" after the type is the org slash.
        return plural.removesuffix("s"), name.replace("--", "/")

    def disk_usage(self) -> tuple[int, int]:
        """Return (total, free) bytes of the filesystem holding the store (or its parent)."""
        probe = self.hub_dir
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = shutil.disk_usage(probe)
        return usage.total, usage.free

    def stale_partials(self, *, older_than: datetime, keep: set[str]) -> list[str]:
        """Return partial files and sidecars written before a time, except for kept blob ids.

        Names are relative to the store; `partials_remove` takes them back.
        """
        stale = []
        for path in self.hub_dir.glob("*/blobs/*.incomplete*"):
            blob_id = path.name.split(".incomplete", 1)[0]
            if blob_id in keep:
                continue
            try:
                modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
            except FileNotFoundError:
                continue
            if modified < older_than:
                stale.append(self.relative(path))
        return stale

    def plan_removal(
        self,
        repo_id: str,
        patterns: list[str],
        keep_patterns: list[list[str]],
        repo_type: str = "model",
    ) -> Removal:
        """Plan removing an entry's files (see store.removal); reads one repo folder only."""
        return plan_removal(self._repo(repo_id, repo_type), patterns, keep_patterns)

    def plan_snapshot_removal(
        self, repo_id: str, commit_hash: str, patterns: list[str], keep_patterns: list[list[str]]
    ) -> Removal:
        """Plan removing one snapshot's files of an entry, after its revision moved on (update).

        Files other entries use stay; a blob goes only when no remaining link points at it.
        """
        return plan_snapshot_removal(self._repo(repo_id), commit_hash, patterns, keep_patterns)

    # --- writing ------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store directory so that tools pointed at it find a cache."""
        os.makedirs(self.hub_dir, exist_ok=True)

    def prepare_repo(self, repo_id: str) -> None:
        """Create blobs/ and snapshots/ so that a scan during a first download sees a repo."""
        base = self._repo(repo_id)
        (base / "blobs").mkdir(parents=True, exist_ok=True)
        (base / "snapshots").mkdir(parents=True, exist_ok=True)

    def link_snapshot(self, repo_id: str, commit_hash: str, path: str, blob_id: str) -> None:
        """Point snapshots/<commit>/<path> at its blob with a relative symlink, as the hub does."""
        base = self._repo(repo_id)
        link = base / "snapshots" / commit_hash / PurePosixPath(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(base / "blobs" / blob_id, link.parent)
        tmp = link.with_name(f".{link.name}.link")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic: a reader never sees a missing or half-made link

    def write_ref(self, repo_id: str, revision: str, commit_hash: str) -> None:
        """Record which commit a branch or tag name points at (refs/<revision>)."""
        if revision == commit_hash:
            return
        ref = self._repo(repo_id) / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.tmp")
        tmp.write_text(commit_hash)
        os.replace(tmp, ref)

    def blob_remove(self, repo_id: str, blob_id: str) -> bool:
        """Remove a blob of a repo (a damaged one, before a repair fetches it again).

        Return True if it was there. Only a blob id names a file: nothing else is removed.
        """
        if not blob_id or "/" in blob_id or blob_id.startswith(".") or "incomplete" in blob_id:
            raise ValueError(f"not a blob id: {blob_id!r}")
        path = self.blob_path(repo_id, blob_id)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def partials_remove(self, names: list[str]) -> list[str]:
        """Remove partial files named relative to the store; return the names removed."""
        removed = []
        for name in names:
            path = self.hub_dir / PurePosixPath(name)
            # Only partial files and their sidecars, only inside the store.
            if ".incomplete" not in path.name or self.hub_dir not in path.parents:
                continue
            path.unlink(missing_ok=True)
            removed.append(name)
        return removed

    def partials_discard(self, repo_id: str, blob_ids: set[str]) -> tuple[list[str], int]:
        """Remove the partial files of these blobs of a repo, with their resume sidecars.

        Return the names removed (relative to the store) and the bytes of the partial files
        (sidecars are not counted, as scans do not count them). A finished blob is never
        touched: only `<blob>.incomplete*` names are.
        """
        blobs = self._repo(repo_id) / "blobs"
        removed, freed = [], 0
        for blob_id in sorted(blob_ids):
            if not blob_id or "/" in blob_id or blob_id.startswith("."):
                continue  # a blob id is a hash: anything else would name another file
            for path in sorted(blobs.glob(f"{glob.escape(blob_id)}.incomplete*")):
                try:
                    size = path.stat().st_size
                    path.unlink()
                except FileNotFoundError:
                    continue
                if path.name.endswith(".incomplete"):
                    freed += size
                removed.append(self.relative(path))
        return removed, freed

    # --- local files in and out (store/local.py) ---------------------------------------

    LOCAL_NAMESPACE = "local"

    def local_repo_id(self, slug: str) -> str:
        """Return the repo id of an imported model: `local/<slug>` (models--local--<slug>)."""
        return f"{self.LOCAL_NAMESPACE}/{slug}"

    def import_source(self, raw: str) -> tuple[LocalPath, list[SourceFile], bool]:
        """Resolve a path to import under IMPORT_ROOTS; return it, its files and is-a-folder."""
        source = local.resolve_in_roots(raw, self.import_roots, setting="IMPORT_ROOTS")
        if source.path.is_dir():
            return source, local.folder_files(source), True
        size = source.path.stat().st_size
        return source, [SourceFile(path=source.path, name=source.path.name, size=size)], False

    def on_store_filesystem(self, path: Path) -> bool:
        """Return True when a path is on the filesystem of the store (hardlinks can reach)."""
        return local.same_filesystem(path, self.hub_dir)

    def place_blob(self, repo_id: str, source: Path, mode: str, *, tmp_name: str, on_bytes) -> str:
        """Place a local file as a blob of a repo by mode (store/local.place_blob); its sha256."""
        blobs = self._repo(repo_id) / "blobs"
        return local.place_blob(blobs, source, mode, tmp_name=tmp_name, on_bytes=on_bytes)

    def local_repo_discard(self, repo_id: str) -> None:
        """Remove a local repo's folder whole (a failed or cancelled first import).

        Only a repo of the local namespace: no hub download is ever removed this way.
        rmtree never follows symlinks, so a symlink-mode blob's original stays.
        """
        if not repo_id.startswith(f"{self.LOCAL_NAMESPACE}/"):
            raise ValueError(f"{repo_id} is not a local repo")
        shutil.rmtree(self._repo(repo_id), ignore_errors=True)

    def export_dest(self, raw: str) -> LocalPath:
        """Resolve a new export directory under EXPORT_ROOTS; it must not exist."""
        return local.resolve_in_roots(raw, self.export_roots, setting="EXPORT_ROOTS", exists=False)

    def export_files(
        self, location: str, repo_id: str, commit_hash: str, paths: list[str]
    ) -> list[ExportFile]:
        """Return an installed snapshot's files to export, with their sizes."""
        files = []
        for path in paths:
            source = self.snapshot_file(location, repo_id, commit_hash, path)
            files.append(ExportFile(path=path, source=source, size=source.stat().st_size))
        return files

    def export_write(self, dest: LocalPath, files: list[ExportFile], **kwargs) -> list[dict]:
        """Write an export into a new directory (store/local.export_write)."""
        return local.export_write(dest, files, **kwargs)

    # --- what clients may see -----------------------------------------------------------

    def redact(self, text: str) -> str:
        """Return text with the store's absolute paths made relative and others shortened.

        Operation messages reach API clients: they say which file, never where the server
        keeps it.
        """
        for root, label in (
            (self.hub_dir, "the models store"),
            (self.legacy_dir, "the legacy cache"),
        ):
            if root is not None:
                # Inside the store a path reads as its store-relative name.
                text = text.replace(f"{root}{os.sep}", "").replace(str(root), label)
        return _ABSOLUTE_PATH.sub(lambda m: "…/" + m.group(1), text)


@functools.cache
def get_store() -> Store:
    """Return the Store of the current settings, built once (and again when they change)."""
    from django.conf import settings

    legacy = settings.LEGACY_HUB_DIR
    return Store(
        hub_dir=Path(settings.MODELS_HUB_DIR),
        legacy_dir=Path(legacy) if legacy else None,
        quota_bytes=settings.MODELS_MAX_BYTES,
        min_free_bytes=settings.MIN_FREE_BYTES,
        import_roots=tuple(Path(p) for p in settings.IMPORT_ROOTS),
        export_roots=tuple(Path(p) for p in settings.EXPORT_ROOTS),
    )


STORE_SETTINGS = frozenset(
    {"MODELS_DIR", "MODELS_HUB_DIR", "LEGACY_HUB_DIR", "MODELS_MAX_BYTES", "MIN_FREE_BYTES"}
    | {"IMPORT_ROOTS", "EXPORT_ROOTS"}
)


def store_settings_changed(*, setting: str, **kwargs) -> None:
    """Forget the Store when a setting it was built from changes (tests override them)."""
    if setting in STORE_SETTINGS:
        get_store.cache_clear()
