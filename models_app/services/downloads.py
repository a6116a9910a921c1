"""Downloads: start one, and its executor (plan, disk preflight, verified transfer, snapshot).

The byte transfer is the fetch package's; this module orchestrates files in parallel and is the
only writer of the operation row while it runs (fetch threads never touch the database).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from django.conf import settings
from django.db.models.functions import Now
from django.utils import timezone

from .. import hub, selectors
from ..errors import Cancelled, DiskSpace, InvalidState
from ..executors import executor
from ..fetch import BlobSpec, RetryPolicy, fetch_blob
from ..models import Installation, Model, ModelSource, Operation, OperationKind
from ..store import get_store, repo_folder
from .cancellation import download_partials_discard
from .model_facts import model_facts_ensure
from .operations import StartResult, operation_start
from .progress import LostOwnership, ProgressReporter
from .pruning import prune_for_room, prune_would_free
from .reconcile import store_reconcile

logger = logging.getLogger(__name__)


def download_start(*, model: Model, user=None) -> StartResult:
    """Queue a download of a model unless it is installed (see operation_start)."""
    if model.source == ModelSource.LOCAL:
        raise InvalidState(
            f"{model.key} was imported from disk; it has nothing to download: import it again.",
            details={"model": model.key},
        )

    def installed() -> StartResult | None:
        if selectors.installed_in_store(model=model):
            return StartResult(None, False, f"{model.key} is already installed.", "installed")
        return None

    return operation_start(model=model, kind=OperationKind.DOWNLOAD, user=user, unless=installed)


def retry_policy() -> RetryPolicy:
    return RetryPolicy(
        attempts=settings.DOWNLOAD_RETRY_ATTEMPTS,
        base_delay=settings.DOWNLOAD_RETRY_BASE_DELAY,
        max_delay=settings.DOWNLOAD_RETRY_MAX_DELAY,
        connect_timeout=settings.DOWNLOAD_CONNECT_TIMEOUT,
        read_timeout=settings.DOWNLOAD_READ_TIMEOUT,
    )


def plan_retried(
    op: Operation, policy: RetryPolicy, reporter: ProgressReporter, *, revision: str | None = None
) -> hub.DownloadPlan:
    """Make the plan of the model's revision (or of `revision`), retrying transient hub faults
    with the download's backoff."""
    model = op.model
    for attempt in range(1, policy.attempts + 1):
        try:
            return hub.plan_download(
                repo_id=model.repo_id,
                revision=revision or model.revision,
                patterns=model.file_patterns,
                endpoint=settings.HF_ENDPOINT,
                token=settings.HF_TOKEN,
            )
        except hub.TRANSIENT as exc:
            if attempt == policy.attempts:
                raise
            reporter.retried()
            delay = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
            logger.info("planning %s failed (%s); retry in %.1fs", model.key, exc, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                reporter.tick(0, force=True)
                if reporter.cancel_requested:
                    raise Cancelled("Cancelled while planning.") from exc
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    raise AssertionError("unreachable")


def _disk_preflight(files: list[hub.PlannedFile], op: Operation, reporter) -> int:
    """Fail at once when the disk cannot take the rest of the download plus the reserve.

    With AUTO_PRUNE on, least-recently-used models are pruned first to make the room;
    this download's heartbeat stays fresh all the while.
    """
    store = get_store()
    repo_id = op.model.repo_id
    remaining = sum(f.size - store.partial_size(repo_id, f.blob_id) for f in files)
    reserve = settings.DOWNLOAD_DISK_RESERVE
    _, free = store.disk_usage()
    if free < remaining + reserve and settings.AUTO_PRUNE:
        prune_for_room(
            need_bytes=remaining + reserve - free,
            parent=op,
            on_step=lambda: reporter.tick(reporter.last_done or 0, force=True),
        )
        _, free = store.disk_usage()
    if free < remaining + reserve:
        message = (
            f"Not enough disk space in the models store: the download needs {remaining:,} more "
            f"bytes plus a reserve of {reserve:,} bytes, and {free:,} bytes are free."
        )
        if not settings.AUTO_PRUNE:
            would = prune_would_free(exclude_model_id=op.model_id)
            message += f" A prune could free up to {would:,} bytes (AUTO_PRUNE is off)."
        raise DiskSpace(message, details={"needed": remaining, "reserve": reserve, "free": free})
    return remaining


@executor(OperationKind.DOWNLOAD)
def download_execute(op: Operation) -> dict:
    """Download a model's files into the store; return figures for the completion event.

    A cancel that asked to discard the partial files removes them once every fetch
    thread has stopped, whatever ended the download (operation_execute then reconciles
    the repo folder).
    """
    try:
        return _download(op)
    except LostOwnership:
        raise  # reaped: the row (and the partial files) may be another worker's by now
    except Exception as exc:
        discard = Operation.objects.filter(pk=op.pk).values_list("discard_partial", flat=True)
        if not discard.first():
            raise
        discarded = download_partials_discard(operation=op)
        if not isinstance(exc, Cancelled):
            exc_details = getattr(exc, "details", None)
            if isinstance(exc_details, dict):
                exc_details.update(discarded)
            raise
        n, freed = len(discarded["partial_files_discarded"]), discarded["partial_bytes_discarded"]
        raise Cancelled(
            f"Cancelled; {n} partial file{'s' if n != 1 else ''} ({freed:,} bytes) discarded.",
            details=discarded,
        ) from None


def planned_files_fetch(
    op: Operation,
    plan: hub.DownloadPlan,
    files: list[hub.PlannedFile],
    *,
    reporter: ProgressReporter,
    policy: RetryPolicy,
) -> int:
    """Fetch the blobs of these planned files that the store lacks; return the wire bytes.

    Record the plan on the row (its files, commit and total), check the disk first, then
    fetch in parallel, verified, with progress and cancel. A download fetches every file
    of its plan, an update the same (blobs it has are skipped), a repair the damaged ones
    (their blobs removed first). Links and refs are the caller's.
    """
    model = op.model
    store = get_store()
    total = sum(f.size for f in files)
    op.bytes_total = total
    op.commit_hash = plan.commit_hash
    Operation.objects.filter(pk=op.pk).update(
        plan=[f.as_dict() for f in files],
        commit_hash=plan.commit_hash,
        bytes_total=total,
        updated_at=Now(),
    )
    store.prepare_repo(model.repo_id)

    unique = {f.blob_id: f for f in files}  # same content under two names: fetch once
    done = {
        blob_id: f.size
        if store.has_blob(model.repo_id, blob_id)
        else store.partial_size(model.repo_id, blob_id)
        for blob_id, f in unique.items()
    }
    pending = [f for b, f in unique.items() if not store.has_blob(model.repo_id, b)]
    reporter.tick(sum(done.values()), force=True)
    _disk_preflight(pending, op, reporter)
    if not pending:
        return 0

    cancel = threading.Event()
    headers = hub.request_headers(token=settings.HF_TOKEN)
    session = hub.http_session()
    retries = dict.fromkeys(unique, 0)  # further requests of each blob after a fault
    counted = 0

    def fetch(f: hub.PlannedFile) -> int:
        def on_progress(n: int, blob_id=f.blob_id) -> None:
            done[blob_id] = n  # one slot per thread: no lock needed

        def on_retry(blob_id=f.blob_id) -> None:
            retries[blob_id] += 1  # one slot per thread, as above

        return fetch_blob(
            session=session,
            spec=BlobSpec(
                url=f.url,
                path=f.path,
                size=f.size,
                sha256=f.sha256,
                git_oid=f.git_oid,
                pinned_sha256=(model.sha256 or {}).get(f.path),
            ),
            partial=store.partial_path(model.repo_id, f.blob_id),
            final=store.blob_path(model.repo_id, f.blob_id),
            headers=headers,
            policy=policy,
            on_progress=on_progress,
            cancel=cancel,
            on_retry=on_retry,
        )

    workers = max(1, min(settings.DOWNLOAD_PARALLEL_FILES, len(pending)))
    lost = None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
        futures = [pool.submit(fetch, f) for f in pending]
        while True:
            finished, running = wait(
                futures, timeout=settings.OPERATION_PROGRESS_INTERVAL,
                return_when=FIRST_EXCEPTION,
            )  # fmt: skip
            if any(f.exception() for f in finished):
                cancel.set()  # one file failed for good: stop the others, keep partials
            total_retries = sum(retries.values())
            reporter.retried(total_retries - counted)  # the fetch threads never write
            counted = total_retries
            try:
                reporter.tick(sum(done.values()), force=not running)
            except LostOwnership as exc:
                lost = exc
                cancel.set()
            if reporter.cancel_requested:
                cancel.set()
            if not running:
                break
    if lost is not None:
        raise lost
    errors = [f.exception() for f in futures if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, Cancelled)]
    if real:
        raise real[0]
    if errors or reporter.cancel_requested:
        raise Cancelled("Cancelled; the partial files stay for a later resume.")
    return sum(f.result() for f in futures)


def _download(op: Operation) -> dict:
    model = op.model
    store = get_store()
    policy = retry_policy()
    reporter = ProgressReporter(op)
    started = time.monotonic()

    plan = plan_retried(op, policy, reporter)
    wire_bytes = planned_files_fetch(op, plan, plan.files, reporter=reporter, policy=policy)

    for f in plan.files:
        store.link_snapshot(model.repo_id, plan.commit_hash, f.path, f.blob_id)
    store.write_ref(model.repo_id, model.revision, plan.commit_hash)
    # The operation's outcome is published when it ends.
    store_reconcile(folders=[repo_folder(model.repo_id)], publish=False)
    Installation.objects.filter(model=model).update(verified_at=timezone.now())
    if model.gguf_file:
        # Reconcile read the header if the file is new to it; this covers the rest.
        model.refresh_from_db(fields=["gguf_facts"])
        model_facts_ensure(model=model, commit_hash=plan.commit_hash)
    elapsed = time.monotonic() - started
    return {
        "bytes_total": plan.total_bytes,
        "wire_bytes": wire_bytes,
        "files": len(plan.files),
        "commit": plan.commit_hash,
        "seconds": round(elapsed, 3),
    }
