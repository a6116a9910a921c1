"""Build a real Hugging Face cache directory on disk, the way the hub client writes one."""

import hashlib
import os
from pathlib import Path


def repo_folder(repo_id: str, repo_type: str = "model") -> str:
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def write_snapshot(
    hub_dir: Path,
    repo_id: str,
    commit: str,
    files: dict[str, bytes],
    *,
    refs: tuple[str, ...] = ("main",),
    repo_type: str = "model",
) -> Path:
    """Write blobs, a snapshot of symlinks and refs for one commit; return the snapshot dir.

    Blobs are named by sha256 like LFS files, so equal content is one shared blob.
    """
    repo_dir = hub_dir / repo_folder(repo_id, repo_type)
    blobs = repo_dir / "blobs"
    snapshot = repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        blob = blobs / hashlib.sha256(content).hexdigest()
        if not blob.exists():
            blob.write_bytes(content)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(os.path.relpath(blob, link.parent), link)
    for ref in refs:
        ref_path = repo_dir / "refs" / ref
        ref_path.parent.mkdir(parents=True, exist_ok=True)
        ref_path.write_text(commit)
    return snapshot


def write_partial(hub_dir: Path, repo_id: str, name: str, size: int) -> Path:
    """Write an interrupted download's `.incomplete` file."""
    blobs = hub_dir / repo_folder(repo_id) / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    path = blobs / f"{name}.incomplete"
    path.write_bytes(b"\0" * size)
    return path
