"""Quota, pruning order and exemptions, pinning, unmanaged repos, AUTO_PRUNE."""

import os
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from models_app import selectors, services
from models_app.engine import operation_run
from models_app.models import Event, Installation, Operation, UnmanagedRepo
from models_app.services.reconcile import store_reconcile
from tests.factories import CollectionFactory, ModelFactory
from tests.hub_cache import write_partial, write_snapshot

pytestmark = pytest.mark.django_db

API = "/api/v1"
KB = 1000


@pytest.fixture
def run_prune(django_capture_on_commit_callbacks):
    """Return a function that starts a prune and runs it as a worker would; its plan, done.

    The on_commit callbacks run (they enqueue), as they do outside a test transaction.
    """

    def run(user=None) -> services.PrunePlan:
        with django_capture_on_commit_callbacks(execute=True):
            result, _ = services.prune_start(user=user)
        assert operation_run(operation_id=result.operation.id) == "succeeded"
        op = Operation.objects.get(pk=result.operation.id)
        done = services.PrunePlan.from_dict(op.plan)
        done.removed, done.failed = op.result["removed"], op.result["failed"]
        return done

    return run


@pytest.fixture
def five_installed(isolated_store, settings):
    """Five installed models of 10 kB each, used at known times (oldest first: m0)."""
    now = timezone.now()
    models = []
    for i in range(5):
        model = ModelFactory(key=f"m{i}", repo_id=f"acme/m{i}", allow_patterns=["*.safetensors"])
        write_snapshot(
            isolated_store, f"acme/m{i}", f"{i}" * 40, {"model.safetensors": bytes([i]) * 10 * KB}
        )
        models.append(model)
    store_reconcile()
    for i, model in enumerate(models):
        Installation.objects.filter(model=model).update(last_used_at=now - timedelta(days=10 - i))
    settings.MODELS_MAX_BYTES = 50 * KB
    return models


def test_cache_reports_the_quota(superuser_client, five_installed, settings):
    settings.MODELS_MAX_BYTES = 60 * KB
    settings.MIN_FREE_BYTES = 123
    body = superuser_client.get(f"{API}/cache").json()
    assert body["quota_bytes"] == 60 * KB
    assert body["quota_remaining_bytes"] == 10 * KB
    assert body["min_free_bytes"] == 123


def test_under_quota_nothing_to_prune(five_installed):
    plan = services.prune_plan()
    assert plan.need_bytes == 0 and plan.removals == []


def test_prune_removes_least_recently_used_first(
    five_installed, settings, isolated_store, run_prune
):
    settings.MODELS_MAX_BYTES = 25 * KB  # 50 kB stored: three models must go
    plan = services.prune_plan()
    assert [i.model for i in plan.removals] == ["m0", "m1", "m2"]
    assert all(i.reason.startswith("least recently used (last used ") for i in plan.removals)
    assert Installation.objects.count() == 5  # a dry run changes nothing
    done = run_prune()
    assert done.removed == ["m0", "m1", "m2"]
    assert sorted(Installation.objects.values_list("model__key", flat=True)) == ["m3", "m4"]
    assert not (isolated_store / "models--acme--m0").exists()
    assert selectors.cache_summary()["total_bytes"] <= 25 * KB
    assert Operation.objects.filter(kind="delete", state="succeeded").count() == 3


def test_never_used_models_count_from_their_install_time(five_installed, settings):
    Installation.objects.filter(model__key="m4").update(
        last_used_at=None, installed_at=timezone.now() - timedelta(days=30)
    )
    settings.MODELS_MAX_BYTES = 45 * KB
    plan = services.prune_plan()
    assert [i.model for i in plan.removals] == ["m4"]
    assert "never used" in plan.removals[0].reason


def test_exemptions_are_never_removed(five_installed, settings):
    m0, m1, m2, _, _ = five_installed
    Installation.objects.filter(model=m0).update(pinned=True)
    CollectionFactory(name="docs", embedding_model=m1)
    services.model_activate(model=m2)
    settings.MODELS_MAX_BYTES = 15 * KB
    plan = services.prune_plan()
    assert [i.model for i in plan.removals] == ["m3", "m4"]
    assert {i.model: i.reason for i in plan.skipped} == {
        "m0": "pinned",
        "m1": "used by collection docs",
        "m2": "the active embedding model",
    }
    assert plan.enough is False  # 30 kB stay, over the 15 kB quota: said, not hidden


def test_min_free_floor_drives_prune(small_filesystem, settings):
    """On a private tmpfs free space moves only with our writes, so the floor is exact."""
    mount = small_filesystem("1m")
    settings.MODELS_DIR, settings.MODELS_HUB_DIR = mount, mount / "hub"
    settings.MODELS_MAX_BYTES = None
    for i in range(3):
        ModelFactory(key=f"f{i}", repo_id=f"acme/f{i}", allow_patterns=["*.safetensors"])
        write_snapshot(
            mount / "hub", f"acme/f{i}", f"{i}" * 40, {"model.safetensors": b"x" * 100 * KB}
        )
    store_reconcile()
    for i in range(3):
        Installation.objects.filter(model__key=f"f{i}").update(
            last_used_at=timezone.now() - timedelta(days=10 - i)
        )
    settings.MIN_FREE_BYTES = selectors.cache_summary()["free_disk_bytes"] + 150 * KB
    plan = services.prune_plan()
    assert [i.model for i in plan.removals] == ["f0", "f1"]
    assert plan.need_bytes == 150 * KB


def test_old_partials_are_pruned(five_installed, isolated_store, run_prune):
    old = write_partial(isolated_store, "acme/m0", "a" * 64, 100)
    stamp = timezone.now().timestamp() - 3 * 24 * 3600
    os.utime(old, (stamp, stamp))
    plan = services.prune_plan()
    assert plan.partial_files == [str(old.relative_to(isolated_store))]
    run_prune()
    assert not old.exists()


def test_prune_api_dry_run_and_queue(
    superuser_client, five_installed, settings, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    settings.MODELS_MAX_BYTES = 35 * KB
    dry = superuser_client.post(
        f"{API}/cache/prune", {"dry_run": True}, content_type="application/json"
    )
    assert dry.status_code == 200
    assert [i["model"] for i in dry.json()["removals"]] == ["m0", "m1"]
    assert dry.json()["bytes_to_free"] == 20 * KB
    assert OrmQ.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        real = superuser_client.post(
            f"{API}/cache/prune", {"dry_run": False}, content_type="application/json"
        )
    assert real.status_code == 202 and OrmQ.objects.count() == 1


def test_prune_command(five_installed, settings, capsys):
    settings.MODELS_MAX_BYTES = 45 * KB
    call_command("models_prune", "--dry-run")
    out = capsys.readouterr().out
    assert "would remove 1 models" in out and "- m0" in out
    assert Installation.objects.count() == 5
    call_command("models_prune")
    assert Installation.objects.count() == 4


def test_prune_admin_action_shows_the_plan_then_queues(
    superuser_client, five_installed, settings, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ

    settings.MODELS_MAX_BYTES = 45 * KB
    url = reverse("admin:models_app_model_changelist")
    page = superuser_client.post(
        url, {"action": "prune_store", "_selected_action": [five_installed[0].pk]}
    ).content.decode()
    assert "<code>m0</code>" in page and "least recently used" in page
    assert OrmQ.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        superuser_client.post(
            url,
            {"action": "prune_store", "_selected_action": [five_installed[0].pk], "confirm": "yes"},
        )
    assert OrmQ.objects.count() == 1


def test_daily_prune_schedule_exists(db):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="modelyard-prune")
    assert (schedule.func, schedule.schedule_type) == ("models_app.tasks.prune", "D")
    assert Schedule.objects.get(name="modelyard-reaper").minutes == 1


def test_pinning_through_api_and_admin(superuser_client, five_installed, settings):
    response = superuser_client.put(
        f"{API}/models/m0/pinned", {"pinned": True}, content_type="application/json"
    )
    assert response.json() == {"model": "m0", "pinned": True}
    settings.MODELS_MAX_BYTES = 45 * KB
    assert [i.model for i in services.prune_plan().removals] == ["m1"]
    inst = Installation.objects.get(model__key="m1")
    superuser_client.post(
        reverse("admin:models_app_installation_changelist"),
        {"action": "pin_selected", "_selected_action": [inst.pk]},
    )
    assert Installation.objects.get(pk=inst.pk).pinned
    missing = ModelFactory(key="absent")
    refused = superuser_client.put(
        f"{API}/models/{missing.key}/pinned", {"pinned": True}, content_type="application/json"
    )
    assert refused.status_code == 409 and refused.json()["code"] == "ERR_NOT_INSTALLED"


def test_unmanaged_repo_listed_and_deleted(superuser_client, isolated_store):
    write_snapshot(isolated_store, "someone/thing", "9" * 40, {"weights.bin": b"t" * 2000})
    store_reconcile()
    listed = superuser_client.get(f"{API}/cache").json()["unmanaged_repos"]
    assert [(r["repo_id"], r["size_on_disk"]) for r in listed] == [("someone/thing", 2000)]
    response = superuser_client.delete(f"{API}/cache/unmanaged/{listed[0]['id']}")
    assert response.json() == {"repo_id": "someone/thing", "bytes_freed": 2000}
    assert not (isolated_store / "models--someone--thing").exists()
    assert not UnmanagedRepo.objects.exists()
    assert Event.objects.get(kind="deleted").data["repo_id"] == "someone/thing"
    assert superuser_client.delete(f"{API}/cache/unmanaged/999").status_code == 404


# --- AUTO_PRUNE on a real small filesystem ----------------------------------------------


@pytest.fixture
def small_store(small_filesystem, settings):
    """MODELS_DIR on a real 6 MB tmpfs, so that free space is truly short."""
    mount = small_filesystem("6m")
    settings.MODELS_DIR = mount
    settings.MODELS_HUB_DIR = mount / "hub"
    return settings.MODELS_HUB_DIR


@pytest.mark.parametrize("auto_prune", [False, True])
def test_download_short_of_room_prunes_only_with_auto_prune(hub, small_store, settings, auto_prune):
    settings.AUTO_PRUNE = auto_prune
    old = ModelFactory(key="old-one", repo_id="acme/old-one", allow_patterns=["*.bin"])
    write_snapshot(small_store, "acme/old-one", "7" * 40, {"model.bin": b"o" * 3_000_000})
    store_reconcile()
    Installation.objects.filter(model=old).update(last_used_at=timezone.now() - timedelta(days=9))
    gguf = ModelFactory(
        key="tiny-q4",
        repo_id="acme/tiny-llm-GGUF",
        type="llm",
        gguf_file="tiny-q4_k_m.gguf",
        allow_patterns=[],
    )  # 4 MiB: does not fit
    op = services.download_start(model=gguf).operation
    state = operation_run(operation_id=op.id)
    op.refresh_from_db()
    if auto_prune:
        assert state == "succeeded", op.error_message
        assert not Installation.objects.filter(model=old).exists()
    else:
        assert (state, op.error_code) == ("failed", "ERR_DISK_SPACE")
        assert "A prune could free up to 3,000,000 bytes (AUTO_PRUNE is off)." in op.error_message
        assert Installation.objects.filter(model=old).exists()
