"""Files between the local disk and the store: import and export roots, blobs placed by mode.

The Store (adapter.py) calls these; nothing above the store package sees a path. Paths
from a request are taken only under the configured roots (IMPORT_ROOTS, EXPORT_ROOTS):
each is resolved with os.path.realpath (every symlink followed) and must stay inside a
resolved root. What a message says of a path is its name relative to its root; a path
outside every root is never echoed.

Error codes (stable, docs/models-from-anywhere.md):
  the feature off (no root set) ............................ ERR_FORBIDDEN 403
  a ".." component, a FIFO, device or socket, a bad mode .... ERR_INVALID 422
  a path outside every root, a symlink leading out of one ... ERR_FORBIDDEN 403
  nothing at the path ....................................... ERR_NOT_FOUND 404
  an export destination that exists ......................... ERR_ALREADY_EXISTS 409
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import (
    AlreadyExists,
    ChecksumError,
    InvalidInput,
    NotFound,
    PermissionDenied,
)

CHUNK = 4 * 1024 * 1024
IMPORT_MODES = ("copy", "hardlink", "symlink", "move")
EXPORT_MODES = ("copy", "hardlink", "symlink")

OnBytes = Callable[[int], None]  # called with each chunk's byte count; may raise to stop


@dataclass(frozen=True)
class LocalPath:
    """A path under a root: resolved, the root it is under, and its name relative to it."""

    path: Path
    root: Path
    name: str  # relative to the root, POSIX; "." for the root itself

    @property
    def label(self) -> str:
        return f"'{self.name}'"


@dataclass(frozen=True)
class SourceFile:
    path: Path  # resolved
    name: str  # relative to the imported folder (a file's own name for a single file)
    size: int


def _kind_of(mode: int) -> str | None:
    """Return what a non-regular, non-directory file is, or None for those two."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def resolve_in_roots(
    raw: str, roots: Sequence[Path], *, setting: str, exists: bool = True
) -> LocalPath:
    """Resolve a requested path under one of `roots`; raise the path errors above.

    A relative path is taken relative to the first root. With `exists` False the path must
    not exist yet (an export destination); its parents may be missing.
    """
    what = "Import" if setting == "IMPORT_ROOTS" else "Export"
    if not roots:
        # 403, not 503: nothing is down, the server is configured not to do this.
        raise PermissionDenied(
            f"{what} is off: set {setting} to the directories it may use.",
            details={"setting": setting},
        )
    if not raw or "\x00" in raw:
        raise InvalidInput("Give a path.", details={"field": "path"})
    requested = PurePosixPath(raw)
    if ".." in requested.parts:
        raise InvalidInput(
            "The path must not contain '..' components.", details={"setting": setting}
        )
    resolved_roots = [Path(os.path.realpath(r)) for r in roots]
    lexical = Path(os.path.abspath(requested if requested.is_absolute() else roots[0] / raw))
    real = Path(os.path.realpath(lexical))
    for root in resolved_roots:
        if real.is_relative_to(root):
            break
    else:
        inside = [
            (Path(os.path.abspath(r)), rr)
            for r, rr in zip(roots, resolved_roots, strict=True)
            if lexical.is_relative_to(os.path.abspath(r)) or lexical.is_relative_to(rr)
        ]
        if inside:
            base = inside[0][0] if lexical.is_relative_to(inside[0][0]) else inside[0][1]
            name = lexical.relative_to(base).as_posix()
            raise PermissionDenied(
                f"'{name}' is (or passes through) a symlink that leads outside {setting}.",
                details={"setting": setting, "path": name},
            )
        raise PermissionDenied(
            f"The path is not under any of the {setting} directories.",
            details={"setting": setting},
        )
    local = LocalPath(path=real, root=root, name=real.relative_to(root).as_posix())
    if not exists:
        if os.path.lexists(lexical) or os.path.lexists(real):
            raise AlreadyExists(
                f"{local.label} already exists; an export never overwrites: choose a new "
                "directory name.",
                details={"path": local.name},
            )
        return local
    try:
        mode = os.lstat(real).st_mode
    except FileNotFoundError:
        raise NotFound(
            f"Nothing at {local.label} under the import root.", details={"path": local.name}
        ) from None
    kind = _kind_of(mode)
    if kind is not None:
        raise InvalidInput(
            f"{local.label} is {kind}; import takes a regular file or a folder.",
            details={"path": local.name},
        )
    return local


def folder_files(folder: LocalPath) -> list[SourceFile]:
    """Return the regular files of a folder to import, checked like the folder itself.

    Hidden names (".git", ".cache", ...) are left out; a symlink leading out of the root
    and a FIFO, device or socket inside the folder are refused.
    """
    files = []
    for dirpath, dirnames, filenames in os.walk(folder.path, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            path = Path(dirpath) / filename
            name = path.relative_to(folder.path).as_posix()
            shown = f"'{(PurePosixPath(folder.name) / name).as_posix()}'"
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(folder.root):
                raise PermissionDenied(
                    f"{shown} is a symlink that leads outside IMPORT_ROOTS.",
                    details={"path": name},
                )
            try:
                st = os.stat(real)
            except FileNotFoundError:
                raise NotFound(f"{shown} is a broken symlink.", details={"path": name}) from None
            kind = _kind_of(st.st_mode)
            if kind is not None or stat.S_ISDIR(st.st_mode):
                raise InvalidInput(
                    f"{shown} is {kind or 'a symlink to a folder'}; a model folder holds "
                    "regular files.",
                    details={"path": name},
                )
            files.append(SourceFile(path=real, name=name, size=st.st_size))
    return files


def same_filesystem(a: Path, b: Path) -> bool:
    """Return True when two paths (or their nearest existing parents) share a filesystem."""

    def device(p: Path) -> int:
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.stat(p).st_dev

    return device(a) == device(b)


def _read_hashed(path: Path, on_bytes: OnBytes, into=None) -> tuple[str, int]:
    """Return (sha256, size) of a file read once, optionally writing each chunk to `into`."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            if into is not None:
                into.write(chunk)
            size += len(chunk)
            on_bytes(len(chunk))
    return digest.hexdigest(), size


def _link(source: Path, target: Path, *, what: str) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise InvalidInput(
                f"A hardlink {what} needs both on one filesystem that allows hardlinks "
                f"({os.strerror(exc.errno)}); use mode copy instead.",
                details={"mode": "hardlink"},
            ) from None
        raise


def place_blob(blobs: Path, source: Path, mode: str, *, tmp_name: str, on_bytes: OnBytes) -> str:
    """Place one file in `blobs` as blobs/<sha256>; return the sha256.

    copy: the bytes are copied into a partial file and hashed in the same pass, then the
    partial is renamed to its digest. hardlink (and move, which removes its source only
    after the whole import succeeded): a link to the source, hashed by reading. symlink:
    the blob is a symlink to the source, hashed by reading. Whatever stops it (an
    exception from `on_bytes`: a cancel) leaves no partial behind.
    """
    if mode not in IMPORT_MODES:
        raise InvalidInput(f"Unknown mode {mode!r}.", details={"mode": mode})
    blobs.mkdir(parents=True, exist_ok=True)
    partial = blobs / f"{tmp_name}.incomplete"
    try:
        if mode == "symlink":
            digest, _ = _read_hashed(source, on_bytes)
            os.symlink(source, partial)
        elif mode == "copy" or (mode == "move" and not same_filesystem(source, blobs)):
            with open(partial, "wb") as out:
                digest, _ = _read_hashed(source, on_bytes, into=out)
                out.flush()
                os.fsync(out.fileno())
        else:
            _link(source, partial, what="import needs the file and the models store")
            digest, _ = _read_hashed(partial, on_bytes)
        final = blobs / digest
        if os.path.lexists(final):
            partial.unlink()  # the same content is there already
        else:
            os.replace(partial, final)
    except BaseException:
        if os.path.lexists(partial):
            partial.unlink()
        raise
    return digest


def local_commit(files: dict[str, str]) -> str:
    """Return the commit id of a local import: sha1 of its file names and sha256s, sorted."""
    digest = hashlib.sha1(usedforsecurity=False)
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportFile:
    path: str  # relative to the snapshot
    source: Path  # the snapshot entry (a symlink into blobs/)
    size: int


def export_write(
    dest: LocalPath,
    files: Sequence[ExportFile],
    *,
    mode: str,
    manifest: Callable[[list[dict]], bytes],
    tmp_name: str,
    on_bytes: OnBytes,
) -> list[dict]:
    """Write files (plain bytes, or hardlinks or symlinks to the blobs) and a manifest.

    Everything goes into a hidden sibling of `dest` first, renamed to `dest` at the end,
    so a cancel or a failure leaves nothing (the sibling is removed). Return the
    manifest's file rows (path, size, sha256). A blob named by a sha256 that its bytes do
    not match is ERR_CHECKSUM: a damaged store is not exported.
    """
    if mode not in EXPORT_MODES:
        raise InvalidInput(f"Unknown mode {mode!r}.", details={"mode": mode})
    parent = dest.path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{dest.path.name}.{tmp_name}.tmp"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    rows = []
    try:
        tmp.mkdir()
        for f in files:
            relative = PurePosixPath(f.path)
            if relative.is_absolute() or ".." in relative.parts:
                raise InvalidInput(f"Bad file name {f.path!r} in the snapshot.")
            real = Path(os.path.realpath(f.source))
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if mode == "copy":
                with open(target, "wb") as out:
                    digest, size = _read_hashed(real, on_bytes, into=out)
                    out.flush()
                    os.fsync(out.fileno())
            else:
                if mode == "hardlink":
                    _link(real, target, what="export needs the models store and the destination")
                else:
                    os.symlink(real, target)
                digest, size = _read_hashed(real, on_bytes)
            blob_name = Path(os.readlink(f.source)).name if f.source.is_symlink() else ""
            if len(blob_name) == 64 and blob_name != digest:
                raise ChecksumError(
                    f"{f.path} does not match its blob's sha256 in the store: verify or "
                    "repair the model first.",
                    details={"file": f.path},
                )
            rows.append({"path": f.path, "size": size, "sha256": digest})
        (tmp / "manifest.json").write_bytes(manifest(rows))
        if os.path.lexists(dest.path):
            raise AlreadyExists(
                f"{dest.label} appeared while exporting; an export never overwrites.",
                details={"path": dest.name},
            )
        os.rename(tmp, dest.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows
