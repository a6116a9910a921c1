"""Real worker processes: a qcluster is SIGKILLed mid-download and a new one finishes the job."""

import hashlib
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from models_app import services
from models_app.models import Event, Installation, Operation
from tests.factories import ModelFactory
from tests.processes import child_env, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SIZE = 8 * 1024 * 1024
STALE = 1  # OPERATION_HEARTBEAT_STALE of the second worker, in seconds


def start_cluster(settings, **extra) -> subprocess.Popen:
    env = child_env(settings, **extra)
    # Its own session, so that one killpg reaches the sentinel, pusher, monitor and workers.
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_cluster(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sigkilled_worker_is_reaped_and_a_new_worker_resumes(hub, settings, isolated_store):
    model = ModelFactory(
        key="slow-embed", repo_id="acme/slow-embed", allow_patterns=["*.json", "*.safetensors"]
    )
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=2_000_000)
    op = services.download_start(model=model).operation  # enqueued: autocommit here

    first = start_cluster(settings)
    try:
        wait_until(
            lambda: Operation.objects.get(pk=op.pk).bytes_done > 0.4 * SIZE,
            timeout=60,
            what="40% progress",
            interval=0.1,
            proc=first,
        )
    finally:
        stop_cluster(first, signal.SIGKILL)
    killed_at = Operation.objects.get(pk=op.pk)
    assert killed_at.state == "running"  # nobody told the database
    assert list(isolated_store.rglob("*.incomplete"))

    # A worker that starts reaps at once; a 1 s threshold keeps the test short. Start it
    # once the last heartbeat is older than that, as the reaper compares it.
    wait_until(
        lambda: Operation.objects.filter(
            pk=op.pk, heartbeat_at__lt=timezone.now() - timedelta(seconds=STALE)
        ).exists(),
        timeout=30,
        what=f"the heartbeat to be {STALE} s old",
    )
    hub.clear_faults()
    second = start_cluster(settings, OPERATION_HEARTBEAT_STALE=str(STALE))
    try:
        wait_until(
            lambda: Operation.objects.get(pk=op.pk).state == "interrupted",
            timeout=60,
            what="the reaper",
            interval=0.1,
            proc=second,
        )
        assert Event.objects.filter(kind="interrupted", operation=op).exists()
        services.operation_retry(operation=op)
        wait_until(
            lambda: Operation.objects.get(pk=op.pk).state in ("succeeded", "failed"),
            timeout=60,
            what="the retried download",
            interval=0.1,
            proc=second,
        )
    finally:
        stop_cluster(second)
    op.refresh_from_db()
    assert op.state == "succeeded", op.error_message
    assert hub.bytes_sent("acme/slow-embed/model.safetensors") <= 1.05 * SIZE
    inst = Installation.objects.get(model=model)
    blob = Path(inst.snapshot_path) / "model.safetensors"
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert digest == hub.file_meta("acme/slow-embed", "model.safetensors").sha256
