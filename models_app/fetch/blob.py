"""What to fetch and how hard to try, and `fetch_blob`, the call that does it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2

from .transfer import _BlobFetch


@dataclass(frozen=True)
class BlobSpec:
    url: str  # the resolve URL at a pinned commit (immutable content)
    path: str  # the file's path in the repo, for messages
    size: int  # expected size in bytes
    sha256: str | None  # expected sha256 hex: the LFS oid; None for non-LFS files
    git_oid: str | None  # expected git blob sha1 for non-LFS files ("blob <size>\0" + content)
    pinned_sha256: str | None = None  # the registry's pinned sha256, checked in addition when set


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries per blob for transient faults (first try included)
    base_delay: float = 1.0  # exponential backoff: base * 2**(n-1), capped, with jitter
    max_delay: float = 30.0
    jitter: float = 0.25  # +- fraction of the delay
    connect_timeout: float = 10.0
    read_timeout: float = 30.0


def fetch_blob(
    *,
    session: httpx2.Client,
    spec: BlobSpec,
    partial: Path,
    final: Path,
    headers: dict[str, str],
    policy: RetryPolicy,
    on_progress: Callable[[int], None],
    cancel: threading.Event,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Download spec into `final`, resuming from `partial`; return the bytes received over the wire.

    Raise NetworkError, TimedOut or UpstreamError once `policy.attempts` tries failed, AuthError,
    NotFound or DiskSpace at once, ChecksumError when a second download from zero is still wrong,
    and Cancelled soon after `cancel` is set. The partial is kept for a later resume unless its
    content was proven wrong.
    """
    if final.exists():
        return 0
    fetch = _BlobFetch(session, spec, partial, final, headers, policy, on_progress, cancel, sleep)
    return fetch.run()
