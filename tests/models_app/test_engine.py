"""The operation engine: the executor registry, prune as an operation, errors, plans as reads.

Each test named after a defect of the review reproduces it: it fails on the code before
the engine (prune ran its deletes twice over, a dry run wrote a scan, the preflight walked
the whole store, a crash put the exception in the public message, ...).
"""

import logging
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone
from django_q.models import OrmQ

from models_app import executors, selectors, services
from models_app.engine import operation_run, operation_run_here
from models_app.errors import ModelyardError
from models_app.models import Event, Installation, Operation, OperationKind, StoreScan
from models_app.services.progress import heartbeat_kept
from models_app.store import get_store
from tests.factories import ModelFactory
from tests.hub_cache import write_snapshot

pytestmark = pytest.mark.django_db

API = "/api/v1"
KB = 1000


@pytest.fixture
def three_old(isolated_store, settings):
    """Three installed models of 10 kB, used long ago (oldest first), 5 kB over the quota."""
    now = timezone.now()
    models = []
    for i in range(3):
        model = ModelFactory(key=f"old{i}", repo_id=f"acme/old{i}", allow_patterns=["*.bin"])
        write_snapshot(isolated_store, f"acme/old{i}", f"{i}" * 40, {"w.bin": bytes([i]) * 10 * KB})
        models.append(model)
    services.store_reconcile()
    for i, model in enumerate(models):
        Installation.objects.filter(model=model).update(last_used_at=now - timedelta(days=9 - i))
    settings.MODELS_MAX_BYTES = 25 * KB
    return models


def queued_task_count() -> int:
    return OrmQ.objects.count()


# --- the registry -----------------------------------------------------------------------


def test_every_kind_with_work_today_has_an_executor():
    assert executors.registered_kinds() == [
        "download", "delete", "prune", "verify", "repair", "update", "import", "export",
        "load", "unload",
    ]  # fmt: skip
    assert executors.registered_kinds() == list(OperationKind.values)
    assert executors.executor_for("prune").scope == "store"


def test_a_kind_cannot_get_two_executors_or_be_unknown():
    with pytest.raises(ValueError, match="already has an executor"):
        executors.executor("download")(lambda op: {})
    with pytest.raises(ValueError, match="not an OperationKind"):
        executors.executor("teleport")


def test_an_operation_of_a_kind_without_executor_fails_cleanly(monkeypatch):
    # Every kind has one today: take verify's away, as a kind added without its module.
    monkeypatch.delitem(executors._EXECUTORS, "verify")
    op = Operation.objects.create(model=ModelFactory(), kind="verify")
    assert operation_run(operation_id=op.pk) == "failed"
    op.refresh_from_db()
    assert op.error_code == "ERR_INTERNAL" and "No executor" in op.error_message


# --- prune is an operation; each delete runs exactly once -------------------------------


def test_prune_runs_each_delete_exactly_once(three_old, django_capture_on_commit_callbacks):
    """Defect: prune_run enqueued a task per delete and then ran the same delete inline."""
    with django_capture_on_commit_callbacks(execute=True):
        result, plan = services.prune_start()
    assert result.created and [i.model for i in plan.removals] == ["old0"]
    assert queued_task_count() == 1  # the prune's own task, nothing else
    with django_capture_on_commit_callbacks(execute=True):
        assert operation_run(operation_id=result.operation.pk) == "succeeded"
    assert queued_task_count() == 1  # the deletes were never enqueued
    prune = Operation.objects.get(pk=result.operation.pk)
    deletes = list(Operation.objects.filter(kind="delete"))
    assert [(d.model.key, d.state, d.attempts, d.parent_id) for d in deletes] == [
        ("old0", "succeeded", 1, prune.pk)
    ]
    assert prune.result["removed"] == ["old0"] and prune.result["bytes_freed"] == 10 * KB
    assert prune.plan["removals"][0]["model"] == "old0"  # the plan stays on the row
    assert Event.objects.filter(operation=deletes[0], kind="started").count() == 1


def test_prune_is_a_store_operation_and_one_at_a_time(three_old):
    first, _ = services.prune_start()
    again, _ = services.prune_start()
    assert first.created and not again.created and again.operation.pk == first.operation.pk
    assert first.operation.model is None and first.operation.target == "the models store"


def test_nothing_to_prune_makes_no_operation(three_old, settings):
    settings.MODELS_MAX_BYTES = None
    result, _ = services.prune_start()
    assert (result.operation, result.status, result.http_status) == (None, "nothing_to_prune", 200)
    assert not Operation.objects.exists()


def test_prune_is_cancellable_between_deletes(three_old, settings, monkeypatch):
    settings.MODELS_MAX_BYTES = 1  # all three must go
    result, _ = services.prune_start()
    from models_app.services import pruning

    real = pruning.delete_now

    def delete_then_cancel(**kwargs):
        state = real(**kwargs)
        services.operation_cancel(operation=result.operation)  # a user presses Cancel
        return state

    monkeypatch.setattr(pruning, "delete_now", delete_then_cancel)
    assert operation_run(operation_id=result.operation.pk) == "cancelled"
    prune = Operation.objects.get(pk=result.operation.pk)
    assert prune.result["removed"] == ["old0"]
    assert sorted(Installation.objects.values_list("model__key", flat=True)) == ["old1", "old2"]


def test_prune_keeps_a_model_pinned_after_the_plan(three_old):
    result, plan = services.prune_start()
    assert [i.model for i in plan.removals] == ["old0"]
    Installation.objects.filter(model=three_old[0]).update(pinned=True)
    operation_run(operation_id=result.operation.pk)
    prune = Operation.objects.get(pk=result.operation.pk)
    assert prune.result["removed"] == [] and prune.result["failed"] == ["old0: skipped (pinned)"]
    assert Installation.objects.filter(model=three_old[0]).exists()


def test_prune_command_runs_in_the_foreground_as_an_operation(three_old, capsys):
    from django.core.management import call_command

    call_command("models_prune")
    assert "removed 1 models" in capsys.readouterr().out
    prune = Operation.objects.get(kind="prune")
    assert prune.state == "succeeded" and not prune.task_id
    assert queued_task_count() == 0


def test_prune_api_and_admin_queue_an_operation_with_its_plan(
    superuser_client, three_old, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            f"{API}/cache/prune", {"dry_run": False}, content_type="application/json"
        )
    body = response.json()
    assert response.status_code == 202 and body["status"] == "queued"
    assert body["operation"]["kind"] == "prune" and body["operation"]["model"] is None
    op = Operation.objects.get(pk=body["operation"]["id"])
    assert [i["model"] for i in op.plan["removals"]] == ["old0"]
    listed = superuser_client.get(f"{API}/operations?kind=prune").json()
    assert [o["id"] for o in listed["items"]] == [op.pk]


def test_auto_prune_keeps_the_download_heartbeat_fresh(three_old, monkeypatch, settings):
    """Defect: the download's heartbeat was not ticked while the nested prune ran."""
    from models_app.services import pruning

    download = Operation.objects.create(
        model=ModelFactory(key="new"),
        kind="download",
        state="running",
        heartbeat_at=timezone.now() - timedelta(hours=1),
    )
    seen = []
    real = pruning.delete_now

    def delete_and_look(**kwargs):
        seen.append(Operation.objects.get(pk=download.pk).heartbeat_at)
        return real(**kwargs)

    monkeypatch.setattr(pruning, "delete_now", delete_and_look)
    ticks = []
    freed = pruning.prune_for_room(
        need_bytes=25 * KB, parent=download, on_step=lambda: ticks.append(1)
    )
    assert freed == 30 * KB and len(ticks) == 3  # a tick after every delete
    children = Operation.objects.filter(parent=download)
    assert sorted(c.model.key for c in children) == ["old0", "old1", "old2"]
    assert all(c.state == "succeeded" for c in children)
    assert len(seen) == 3


@pytest.mark.django_db(transaction=True)
def test_heartbeat_kept_writes_from_a_thread_while_work_cannot_tick():
    from tests.processes import wait_until

    stale = timezone.now() - timedelta(hours=1)
    op = Operation.objects.create(
        model=ModelFactory(), kind="delete", state="running", heartbeat_at=stale
    )
    with heartbeat_kept(op, every=0.05):
        wait_until(
            lambda: Operation.objects.get(pk=op.pk).heartbeat_at > stale,
            timeout=10,
            what="a heartbeat from the keeper thread",
        )
    assert services.operations_reap() == []


# --- plans are reads --------------------------------------------------------------------


def row_counts() -> dict[str, int]:
    return {m._meta.label: m.objects.count() for m in apps.get_models()}


def test_prune_dry_run_changes_no_row_of_any_table(superuser_client, three_old):
    """Defect: a dry run reconciled, writing a StoreScan row."""
    before = row_counts()
    plan = services.prune_plan()
    response = superuser_client.post(
        f"{API}/cache/prune", {"dry_run": True}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["status"] == "planned"
    assert [i.model for i in plan.removals] == ["old0"]
    after = row_counts()
    # The API call logs the session in: only Django's session row may differ.
    assert {k: v for k, v in after.items() if k != "sessions.Session"} == {
        k: v for k, v in before.items() if k != "sessions.Session"
    }


def test_the_delete_preflight_reads_only_the_model_repo_folder(three_old, monkeypatch):
    """Defect: the preflight ran scan_cache_dir over the whole store."""
    from models_app.store import removal

    def no_full_scan(*args, **kwargs):
        raise AssertionError("the preflight scanned the whole store")

    monkeypatch.setattr("models_app.store.adapter.store_scan", no_full_scan)
    monkeypatch.setattr("huggingface_hub.scan_cache_dir", no_full_scan)
    read = []
    real = removal._scan_cached_repo
    monkeypatch.setattr(removal, "_scan_cached_repo", lambda path: read.append(path) or real(path))
    usage = selectors.model_usage(model=three_old[1])
    assert usage["bytes_freed"] == 10 * KB
    assert [p.name for p in read] == ["models--acme--old1"]


def test_after_an_operation_only_its_repo_is_reconciled(three_old, monkeypatch):
    def no_full_scan(*args, **kwargs):
        raise AssertionError("an operation rescanned the whole store")

    monkeypatch.setattr("models_app.store.adapter.store_scan", no_full_scan)
    op = services.delete_start(model=three_old[2]).operation
    assert operation_run(operation_id=op.pk) == "succeeded"
    scan = StoreScan.objects.order_by("-id").first()
    assert scan.scope == "models--acme--old2"
    assert scan.managed_bytes == 20 * KB  # the other two repos carried over
    assert set(scan.repo_sizes) == {"models--acme--old0", "models--acme--old1"}


# --- use is recorded --------------------------------------------------------------------


def test_installation_touch_coalesces_to_one_write_a_minute(three_old):
    """Defect: last_used_at and use_count were never written by the product."""
    model = three_old[0]
    now = timezone.now()
    Installation.objects.filter(model=model).update(last_used_at=None, use_count=0)
    assert services.installation_touch(model=model, now=now) is True
    assert services.installation_touch(model=model, now=now + timedelta(seconds=30)) is False
    assert services.installation_touch(model=model, now=now + timedelta(seconds=61)) is True
    inst = Installation.objects.get(model=model)
    assert (inst.use_count, inst.last_used_at) == (2, now + timedelta(seconds=61))


def test_a_touched_model_leaves_the_front_of_the_prune_queue(three_old):
    services.installation_touch(model=three_old[0])
    assert [i.model for i in services.prune_plan().removals] == ["old1"]


def test_the_prune_reason_of_a_never_used_model_says_so(three_old):
    Installation.objects.filter(model=three_old[0]).update(
        last_used_at=None, installed_at=timezone.now() - timedelta(days=30)
    )
    [item] = services.prune_plan().removals
    assert item.model == "old0"
    reason = item.reason
    installed = Installation.objects.get(model=three_old[0]).installed_at
    assert reason == f"least recently used (installed {installed:%Y-%m-%d %H:%M}, never used)"


# --- errors clients see ------------------------------------------------------------------


def test_a_crash_gives_a_reference_not_the_exception(hub, monkeypatch, caplog, isolated_store):
    """Defect: str(exc) (paths, URLs, ...) went into the public error_message."""

    def crash(op):
        raise RuntimeError(f"boom at {isolated_store}/models--x/blobs/abc and /etc/secret")

    monkeypatch.setitem(
        executors._EXECUTORS, "download", executors.Executor(kind="download", execute=crash)
    )
    op = services.download_start(model=ModelFactory()).operation
    with caplog.at_level(logging.ERROR, logger="models_app.services.execution"):
        assert operation_run(operation_id=op.pk) == "failed"
    op.refresh_from_db()
    assert op.error_code == "ERR_INTERNAL"
    assert "boom" not in op.error_message and "/" not in op.error_message
    reference = op.error_message.split("reference ")[1].split(")")[0]
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log
    assert "boom" not in Event.objects.get(operation=op, kind="failed").message


def test_no_token_and_no_absolute_path_in_an_operation_message(settings, monkeypatch):
    settings.HF_TOKEN = "hf_SeCrEtToKeN123"
    store = get_store()

    def fail(op):
        raise ModelyardError(
            f"refused with {settings.HF_TOKEN} writing {store.hub_dir}/models--a--b/blobs/x "
            f"near {store.hub_dir} and /var/lib/other/file.bin; see https://hub.test/a/b"
        )

    monkeypatch.setitem(
        executors._EXECUTORS, "delete", executors.Executor(kind="delete", execute=fail)
    )
    op = Operation.objects.create(model=ModelFactory(), kind="delete")
    operation_run(operation_id=op.pk)
    op.refresh_from_db()
    message = op.error_message
    assert settings.HF_TOKEN not in message and str(store.hub_dir) not in message
    assert "/var/lib" not in message
    assert message == (
        "refused with [token] writing models--a--b/blobs/x near the models store and "
        "…/file.bin; see https://hub.test/a/b"
    )


# --- the page gets the states from the server -------------------------------------------


def test_the_page_script_gets_terminal_states_and_kinds_from_the_server(superuser_client):
    import json
    import re

    from models_app.models import TERMINAL_STATES, OperationKind

    html = superuser_client.get("/settings/models/").content.decode()
    raw = re.search(
        r'<script id="operation-vocabulary" type="application/json">(.*?)</script>', html
    )
    vocabulary = json.loads(raw.group(1))
    assert vocabulary["terminal"] == list(TERMINAL_STATES)
    assert vocabulary["kinds"] == dict(OperationKind.choices)


def test_operation_run_here_refuses_a_busy_target(three_old):
    services.prune_start()
    with pytest.raises(ModelyardError) as caught:
        operation_run_here(kind="prune", plan={})
    assert caught.value.code == "ERR_ALREADY_RUNNING"


def test_the_admin_says_when_there_is_nothing_to_prune(superuser_client, three_old, settings):
    from django.urls import reverse

    settings.MODELS_MAX_BYTES = None
    response = superuser_client.post(
        reverse("admin:models_app_model_changelist"),
        {"action": "prune_store", "_selected_action": [three_old[0].pk], "confirm": "yes"},
        follow=True,
    )
    html = response.content.decode()
    assert "Nothing to prune: the store is within its quota and free-disk floor." in html
    assert "Nothing to prune: Nothing" not in html and not Operation.objects.exists()


def test_a_retried_prune_does_not_count_what_its_first_run_removed(three_old, settings):
    settings.MODELS_MAX_BYTES = 1
    result, _ = services.prune_start()
    op = result.operation
    delete = services.delete_start(model=three_old[0]).operation
    operation_run(operation_id=delete.pk)  # gone before the prune runs
    assert operation_run(operation_id=op.pk) == "succeeded"
    op.refresh_from_db()
    assert op.result["removed"] == ["old1", "old2"]
    assert op.result["failed"] == ["old0: skipped (no longer installed)"]
    assert op.result["bytes_freed"] == 20 * KB
