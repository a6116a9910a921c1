"""Real worker processes: a qcluster is SIGKILLed mid-download and a new one finishes the job."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models_app import services
from models_app.models import Event, Installation, Operation
from tests.factories import ModelFactory
from tests.processes import child_env

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SIZE = 8 * 1024 * 1024


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


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkilled_worker_is_reaped_and_a_new_worker_resumes(hub, settings, isolated_store):
    model = ModelFactory(
        key="slow-embed", repo_id="acme/slow-embed", allow_patterns=["*.json", "*.safetensors"]
    )
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=2_000_000)
    op = services.download_start(model=model).operation  # enqueued: autocommit here

    first = start_cluster(settings)
    try:
        wait_for(
            lambda: Operation.objects.get(pk=op.pk).bytes_done > 0.4 * SIZE, 60, "40% progress"
        )
    finally:
        stop_cluster(first, signal.SIGKILL)
    killed_at = Operation.objects.get(pk=op.pk)
    assert killed_at.state == "running"  # nobody told the database
    assert list(isolated_store.rglob("*.incomplete"))

    # A worker that starts reaps at once; a 1 s threshold keeps the test short.
    time.sleep(1.2)
    hub.clear_faults()
    second = start_cluster(settings, OPERATION_HEARTBEAT_STALE="1")
    try:
        wait_for(lambda: Operation.objects.get(pk=op.pk).state == "interrupted", 60, "the reaper")
        assert Event.objects.filter(kind="interrupted", operation=op).exists()
        services.operation_retry(operation=op)
        wait_for(
            lambda: Operation.objects.get(pk=op.pk).state in ("succeeded", "failed"),
            60,
            "the retried download",
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
