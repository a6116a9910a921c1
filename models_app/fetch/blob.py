"""`fetch_blob`, the one call of the package: one blob from its URL to a verified file."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2

from .spec import BlobSpec, RetryPolicy
from .transfer import _BlobFetch


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
    on_retry: Callable[[], None] = lambda: None,
) -> int:
    """Download spec into `final`, resuming from `partial`; return the bytes received over the wire.

    Raise NetworkError, TimedOut or UpstreamError once `policy.attempts` tries in a row failed
    without bringing new bytes (a try that advanced starts the count again), AuthError,
    NotFound or DiskSpace at once, ChecksumError when a second download from zero is still
    wrong, and Cancelled soon after `cancel` is set. `on_retry` is called before each further
    request of the blob after a fault. The partial is kept for a later resume unless its
    content was proven wrong.
    """
    if final.exists():
        return 0
    fetch = _BlobFetch(
        session, spec, partial, final, headers, policy, on_progress, cancel, sleep, on_retry
    )
    return fetch.run()
