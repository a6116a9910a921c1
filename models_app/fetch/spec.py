"""What to fetch and how hard to try: the leaf types every other module of the package reads."""

from __future__ import annotations

from dataclasses import dataclass


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
    # Tries in a row that may fail on a transient fault without bringing new bytes (the first
    # try included); a try that advanced the partial starts the count again.
    attempts: int = 5
    base_delay: float = 1.0  # exponential backoff: base * 2**(n-1), capped, with jitter
    max_delay: float = 30.0
    jitter: float = 0.25  # +- fraction of the delay
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
