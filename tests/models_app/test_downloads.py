"""Downloads through the service, against the real hub test server and a real store."""

import hashlib
import time

import pytest
from django.utils import timezone
from huggingface_hub import hf_hub_download, scan_cache_dir

from models_app import services
from models_app.engine import operation_run
from models_app.errors import AlreadyRunning, InvalidState
from models_app.models import Event, Installation, Operation
from tests.factories import ModelFactory, OperationFactory
from tests.processes import operation_thread, wait_until

pytestmark = pytest.mark.django_db

SAFETENSORS = 3 * 1024 * 1024


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def embed():
    return ModelFactory(
        key="tiny-embed",
        repo_id="acme/tiny-embed",
        allow_patterns=["*.json", "*.safetensors", "1_Pooling/"],
        download_size=None,
    )


@pytest.fixture
def gguf():
    return ModelFactory(
        key="tiny-q4", repo_id="acme/tiny-llm-GGUF", type="llm",
        gguf_file="tiny-q4_k_m.gguf", allow_patterns=[],
    )  # fmt: skip


def run(model):
    result = services.download_start(model=model)
    assert result.created
    state = operation_run(operation_id=result.operation.id)
    return Operation.objects.get(pk=result.operation.id), state


def source(hub, repo_id, path):
    return hub.file_meta(repo_id, path)


def test_download_installs_a_verified_snapshot(hub, embed, isolated_store):
    op, state = run(embed)
    assert state == "succeeded", op.error_message
    matched = ["1_Pooling/config.json", "config.json", "model.safetensors", "tokenizer.json"]
    expected = sum(source(hub, "acme/tiny-embed", p).size for p in matched)
    assert op.bytes_done == op.bytes_total == expected
    inst = Installation.objects.get(model=embed)
    assert inst.verified_at is not None and inst.commit_hash == op.commit_hash
    assert sorted(inst.files) == [
        "1_Pooling/config.json", "config.json", "model.safetensors", "tokenizer.json",
    ]  # fmt: skip
    snapshot = isolated_store / "models--acme--tiny-embed" / "snapshots" / op.commit_hash
    assert (
        sha256(snapshot / "model.safetensors")
        == source(hub, "acme/tiny-embed", "model.safetensors").sha256
    )
    assert not (snapshot / "README.md").exists()
    assert not list(isolated_store.rglob("*.incomplete*"))
    kinds = list(Event.objects.filter(operation=op).values_list("kind", flat=True))
    assert sorted(kinds) == ["completed", "started"]


def test_store_passes_the_hub_scan_and_offline_lookup(hub, embed, gguf, isolated_store):
    run(embed)
    run(gguf)
    info = scan_cache_dir(isolated_store)
    assert info.warnings == []
    assert {r.repo_id for r in info.repos} == {"acme/tiny-embed", "acme/tiny-llm-GGUF"}
    path = hf_hub_download(
        "acme/tiny-llm-GGUF", "tiny-q4_k_m.gguf", cache_dir=isolated_store,
        local_files_only=True,
    )  # fmt: skip
    assert sha256(path) == source(hub, "acme/tiny-llm-GGUF", "tiny-q4_k_m.gguf").sha256
    pooling = hf_hub_download(
        "acme/tiny-embed", "1_Pooling/config.json", cache_dir=isolated_store, local_files_only=True
    )
    with open(pooling, "rb") as f:
        assert b"pooling" in f.read()


def test_gguf_entry_fetches_only_its_file(hub, gguf, isolated_store):
    op, state = run(gguf)
    assert state == "succeeded"
    assert op.bytes_total == 4 * 1024 * 1024
    assert hub.bytes_sent("tiny-q5_k_m.gguf") == 0


def test_second_request_returns_the_active_operation(embed):
    first = services.download_start(model=embed)
    second = services.download_start(model=embed)
    assert first.created and not second.created
    assert second.operation.id == first.operation.id
    assert Operation.objects.count() == 1


def test_conflicting_operation_is_refused_naming_it(embed):
    delete = OperationFactory(model=embed, kind="delete", state="running")
    with pytest.raises(AlreadyRunning) as info:
        services.download_start(model=embed)
    assert f"#{delete.id}" in info.value.message
    assert info.value.details["operation"] == delete.id


def test_installed_model_answers_already_installed(hub, embed):
    run(embed)
    result = services.download_start(model=embed)
    assert result.operation is None and "already installed" in result.message


def test_task_is_enqueued_only_after_commit(embed, django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        op = services.download_start(model=embed).operation
    assert OrmQ.objects.count() == 0
    for callback in callbacks:
        callback()
    assert OrmQ.objects.count() == 1
    op.refresh_from_db()
    assert op.task_id


def test_drop_at_half_resumes_within_five_percent(hub, gguf):
    size = 4 * 1024 * 1024
    hub.add_fault("tiny-q4_k_m.gguf", "drop_after", bytes=size // 2, mode="fin")
    op, state = run(gguf)
    assert state == "succeeded", op.error_message
    assert hub.bytes_sent("tiny-q4_k_m.gguf") <= 1.05 * size
    assert any(r and r.startswith("bytes=") for r in hub.ranges_seen("tiny-q4_k_m.gguf"))


def test_reset_and_server_errors_are_retried(hub, gguf):
    hub.add_fault("tiny-q4_k_m.gguf", "drop_after", bytes=1_000_000, mode="rst")
    hub.add_fault("tiny-q4_k_m.gguf", "status", code=500, times=2)
    op, state = run(gguf)
    assert state == "succeeded", op.error_message


def test_stalls_that_each_progressed_do_not_fail_the_download(hub, embed, settings, isolated_store):
    """8 stalls, each after some bytes more: 9 tries, and the operation says so."""
    settings.DOWNLOAD_RETRY_ATTEMPTS = 5
    settings.DOWNLOAD_READ_TIMEOUT = 0.3
    step = 256 * 1024
    hub.add_fault("model.safetensors", "stall", seconds=1.5, after_bytes=step, times=8)
    op, state = run(embed)
    assert state == "succeeded", op.error_message
    assert op.attempts >= 9
    ranges = hub.ranges_seen("model.safetensors")
    assert ranges == [None] + [f"bytes={i * step}-" for i in range(1, 9)]
    snapshot = isolated_store / "models--acme--tiny-embed" / "snapshots" / op.commit_hash
    expected = source(hub, "acme/tiny-embed", "model.safetensors").sha256
    assert sha256(snapshot / "model.safetensors") == expected


def test_a_stall_without_progress_still_fails_after_the_retry_attempts(hub, embed, settings):
    settings.DOWNLOAD_RETRY_ATTEMPTS = 3
    settings.DOWNLOAD_READ_TIMEOUT = 0.3
    hub.add_fault("model.safetensors", "stall", seconds=1.5, times=None)
    op, state = run(embed)
    assert (state, op.error_code) == ("failed", "ERR_TIMEOUT")
    assert len(hub.requests_for("model.safetensors", "GET")) == 3
    assert op.attempts == 3  # the claim's try and two retries of the file
    assert "after 3 attempt(s)" in op.error_message


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"kind": "status", "code": 404, "times": None}, "ERR_NOT_FOUND"),
        ({"kind": "status", "code": 503, "times": None}, "ERR_UPSTREAM"),
        ({"kind": "corrupt", "times": None}, "ERR_CHECKSUM"),
    ],
)
def test_fatal_faults_fail_with_their_code_and_leave_nothing_visible(
    hub, gguf, isolated_store, fault, code
):
    hub.add_fault("tiny-q4_k_m.gguf", **fault)
    op, state = run(gguf)
    assert state == "failed"
    assert op.error_code == code and op.error_message
    assert not Installation.objects.exists()
    snapshot_files = list(isolated_store.rglob("snapshots/*/*"))
    assert snapshot_files == []
    assert Event.objects.get(kind="failed", operation=op).error_code == code


def test_gated_repo_without_token_is_err_auth(hub, gguf, settings):
    hub.required_token = "hf_right"
    op, state = run(gguf)
    assert (state, op.error_code) == ("failed", "ERR_AUTH")
    assert "HF_TOKEN" in op.error_message


def test_token_is_sent_and_never_recorded(hub, gguf, settings):
    hub.required_token = settings.HF_TOKEN = "hf_right_token_value"
    op, state = run(gguf)
    assert state == "succeeded"
    for event in Event.objects.all():
        assert "hf_right_token_value" not in f"{event.message}{event.data}"
    assert "hf_right_token_value" not in str(Operation.objects.values().get(pk=op.pk))


def test_disk_preflight_names_both_numbers(hub, gguf, settings):
    settings.DOWNLOAD_DISK_RESERVE = 10**18
    op, state = run(gguf)
    assert (state, op.error_code) == ("failed", "ERR_DISK_SPACE")
    assert f"{4 * 1024 * 1024:,}" in op.error_message and "free" in op.error_message
    # No file was asked for. (Not bytes_sent() == 0: the shared server may still be writing
    # the body of an earlier test's cancelled download into its socket.)
    assert [r.path for r in hub.requests if r.method == "GET" and r.kind != "api"] == []


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_within_a_second_and_keeps_the_partial(hub, embed, isolated_store):
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=400_000)
    op = services.download_start(model=embed).operation
    t, outcome = operation_thread(op.id)
    wait_until(
        lambda: Operation.objects.get(pk=op.pk).bytes_done >= 200_000,
        timeout=10,
        what="200 kB of progress",
    )
    services.operation_cancel(operation=op)
    asked = time.monotonic()
    t.join(timeout=10)
    assert outcome["state"] == "cancelled"
    assert outcome["at"] - asked < 1.0
    op.refresh_from_db()
    assert op.error_code == "ERR_CANCELLED"
    partials = list(isolated_store.rglob("*.incomplete"))
    assert partials and partials[0].stat().st_size > 0
    # Retry resumes: the bytes already there are not fetched again.
    hub.clear_faults()
    hub.reset_counters()
    services.operation_retry(operation=op)
    assert operation_run(operation_id=op.id) == "succeeded"
    assert hub.bytes_sent("model.safetensors") < SAFETENSORS


def test_cancel_a_queued_operation_is_immediate(embed):
    op = services.download_start(model=embed).operation
    op = services.operation_cancel(operation=op)
    assert op.state == "cancelled"
    assert operation_run(operation_id=op.id) == "skipped"


def test_cancel_or_retry_in_the_wrong_state(embed):
    done = OperationFactory(model=embed, state="succeeded")
    with pytest.raises(InvalidState):
        services.operation_cancel(operation=done)
    with pytest.raises(InvalidState):
        services.operation_retry(operation=done)


def test_retry_refused_while_another_operation_is_active(embed):
    failed = OperationFactory(model=embed, state="failed")
    OperationFactory(model=embed, state="running", kind="delete")
    with pytest.raises(AlreadyRunning):
        services.operation_retry(operation=failed)


def test_progress_is_written_and_published(hub, embed, settings, monkeypatch):
    published = []
    monkeypatch.setattr(
        "models_app.services.progress.operation_publish",
        lambda op: published.append(op.bytes_done),
    )
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=3_000_000)
    op, state = run(embed)
    assert state == "succeeded"
    assert len(published) >= 3
    assert published == sorted(published) and published[-1] == op.bytes_total


def test_reaper_marks_stale_running_operations_interrupted(settings, embed):
    settings.OPERATION_HEARTBEAT_STALE = 60
    stale = OperationFactory(
        model=embed, state="running", heartbeat_at=timezone.now() - timezone.timedelta(seconds=61)
    )
    fresh = OperationFactory(state="running", heartbeat_at=timezone.now())
    assert services.operations_reap() == [stale.id]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.state == "interrupted" and "heartbeat" in stale.error_message
    assert fresh.state == "running"
    assert Event.objects.get(kind="interrupted").operation == stale


@pytest.mark.django_db(transaction=True)
def test_reaped_worker_stops_without_overwriting(hub, embed, settings):
    """A worker whose row was reaped (it looked dead) stops at its next progress write."""
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=500_000)
    op = services.download_start(model=embed).operation
    t, result = operation_thread(op.id)
    wait_until(
        lambda: Operation.objects.get(pk=op.pk).state == "running",
        timeout=10,
        what="the worker to start",
        interval=0.02,
    )
    # The reaper looks from an hour ahead rather than the row being backdated: the worker's
    # next progress write would refresh a backdated heartbeat before the reap read it (CI).
    assert services.operations_reap(now=timezone.now() + timezone.timedelta(hours=1)) == [op.id]
    t.join(timeout=10)
    assert result["state"] == "lost"
    assert Operation.objects.get(pk=op.pk).state == "interrupted"


def test_stale_partials_are_cleaned_unless_an_active_operation_owns_them(
    settings, isolated_store, embed
):
    import os

    from tests.hub_cache import write_partial

    old = write_partial(isolated_store, "acme/tiny-embed", "a" * 64, 10)
    young = write_partial(isolated_store, "acme/tiny-embed", "b" * 64, 10)
    owned = write_partial(isolated_store, "acme/tiny-embed", "c" * 64, 10)
    two_days_ago = time.time() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(owned, (two_days_ago, two_days_ago))
    OperationFactory(model=embed, state="running", plan=[{"blob_id": "c" * 64}])
    removed = services.partials_cleanup()
    assert removed == [str(old.relative_to(isolated_store))]
    assert young.exists() and owned.exists() and not old.exists()
