"""Reconcile against a real hub-cache directory built on disk."""

import pytest
from django.core.management import call_command

from models_app import selectors
from models_app.models import Event, Installation, StoreScan, UnmanagedRepo
from models_app.services import store_reconcile
from tests.factories import InstallationFactory, ModelFactory
from tests.hub_cache import write_partial, write_snapshot

pytestmark = pytest.mark.django_db

C1 = "a" * 40
C2 = "b" * 40
WEIGHTS = b"w" * 4000
CONFIG = b'{"hidden_size": 8}'


@pytest.fixture
def snapshot_model():
    return ModelFactory(
        key="mini-embed",
        repo_id="acme/mini-embed",
        allow_patterns=["*.json", "*.safetensors", "1_Pooling/"],
    )


@pytest.fixture
def gguf_models():
    q4 = ModelFactory(
        key="tiny-llm-q4", repo_id="acme/tiny-llm-GGUF", type="llm", gguf_file="tiny-q4_k_m.gguf"
    )
    q5 = ModelFactory(
        key="tiny-llm-q5", repo_id="acme/tiny-llm-GGUF", type="llm", gguf_file="tiny-q5_k_m.gguf"
    )
    return q4, q5


def test_empty_store_reconciles_to_nothing_installed(snapshot_model):
    result = store_reconcile()
    assert result.installed == [] and result.unmanaged == []
    assert not Installation.objects.exists()
    assert StoreScan.objects.get().total_bytes == 0


def test_snapshot_model_installed_with_commit_and_size(isolated_store, snapshot_model):
    write_snapshot(
        isolated_store,
        "acme/mini-embed",
        C1,
        {
            "config.json": CONFIG,
            "model.safetensors": WEIGHTS,
            "1_Pooling/config.json": b'{"pooling": "cls"}',
            "README.md": b"# not matched by the patterns",
        },
    )
    result = store_reconcile()
    assert result.installed == ["mini-embed"]
    inst = Installation.objects.get(model=snapshot_model)
    assert inst.commit_hash == C1
    assert sorted(inst.files) == ["1_Pooling/config.json", "config.json", "model.safetensors"]
    assert inst.size_on_disk == len(CONFIG) + len(WEIGHTS) + len(b'{"pooling": "cls"}')
    assert inst.location == "primary"
    assert Event.objects.filter(kind="reconciled").count() == 1


def test_config_only_snapshot_is_not_installed(isolated_store, snapshot_model):
    write_snapshot(isolated_store, "acme/mini-embed", C1, {"config.json": CONFIG})
    assert store_reconcile().installed == []


def test_gguf_entries_share_a_repo_but_install_per_file(isolated_store, gguf_models):
    q4, q5 = gguf_models
    write_snapshot(isolated_store, "acme/tiny-llm-GGUF", C1, {"tiny-q4_k_m.gguf": WEIGHTS})
    store_reconcile()
    assert Installation.objects.get(model=q4).size_on_disk == len(WEIGHTS)
    assert not Installation.objects.filter(model=q5).exists()
    assert UnmanagedRepo.objects.count() == 0


def test_blob_shared_between_revisions_counts_once(isolated_store, snapshot_model):
    write_snapshot(
        isolated_store,
        "acme/mini-embed",
        C1,
        {"config.json": CONFIG, "model.safetensors": WEIGHTS},
        refs=(),
    )
    write_snapshot(
        isolated_store,
        "acme/mini-embed",
        C2,
        {"config.json": b'{"hidden_size": 16}', "model.safetensors": WEIGHTS},
    )
    store_reconcile()
    inst = Installation.objects.get(model=snapshot_model)
    # The revision refs/main points at wins over the older one.
    assert inst.commit_hash == C2
    scan = StoreScan.objects.get()
    # Three distinct blobs: two configs and one weights file shared by both revisions.
    assert scan.managed_bytes == len(WEIGHTS) + len(CONFIG) + len(b'{"hidden_size": 16}')


def test_unmanaged_repo_and_partial_files_are_recorded(isolated_store, snapshot_model):
    write_snapshot(isolated_store, "someone/else", C1, {"model.safetensors": b"x" * 700})
    write_partial(isolated_store, "acme/mini-embed", "f" * 64, 300)
    write_partial(isolated_store, "someone/else", "e" * 64, 200)
    # A first download under way: a partial and its resume sidecar, no snapshots yet.
    first = write_partial(isolated_store, "acme/new-model", "d" * 64, 0)
    first.with_name(first.name + ".json").write_text("{}")
    result = store_reconcile()
    assert result.unmanaged == ["someone/else"]
    repo = UnmanagedRepo.objects.get()
    assert (repo.repo_id, repo.size_on_disk, repo.revisions) == ("someone/else", 700, [C1])
    scan = StoreScan.objects.get()
    assert scan.unmanaged_bytes == 700 and scan.unmanaged_count == 1
    assert scan.partial_bytes == 500 and len(scan.partial_files) == 3
    # A repo folder with only a partial (a first download under way) is not a warning.
    assert scan.warnings == []


def test_files_removed_from_disk_uninstall_the_model(isolated_store, snapshot_model):
    snap = write_snapshot(
        isolated_store, "acme/mini-embed", C1, {"config.json": CONFIG, "model.safetensors": WEIGHTS}
    )
    store_reconcile()
    (snap / "model.safetensors").unlink()
    result = store_reconcile()
    assert result.uninstalled == ["mini-embed"]
    assert not Installation.objects.exists()


def test_reconcile_is_idempotent_and_keeps_installation_fields(isolated_store, snapshot_model):
    write_snapshot(
        isolated_store, "acme/mini-embed", C1, {"config.json": CONFIG, "model.safetensors": WEIGHTS}
    )
    store_reconcile()
    Installation.objects.update(pinned=True, use_count=3)
    second = store_reconcile()
    assert second.installed == [] and second.uninstalled == []
    inst = Installation.objects.get()
    assert inst.pinned and inst.use_count == 3
    assert Event.objects.filter(kind="reconciled").count() == 1


def test_legacy_cache_is_a_read_only_second_location(settings, tmp_path, snapshot_model):
    legacy = tmp_path / "legacy"
    settings.LEGACY_HUB_DIR = legacy
    write_snapshot(
        legacy, "acme/mini-embed", C1, {"config.json": CONFIG, "model.safetensors": WEIGHTS}
    )
    before = sorted(p.relative_to(legacy) for p in legacy.rglob("*"))
    store_reconcile()
    assert Installation.objects.get().location == "legacy"
    assert sorted(p.relative_to(legacy) for p in legacy.rglob("*")) == before


def test_primary_store_wins_over_legacy(settings, tmp_path, isolated_store, snapshot_model):
    settings.LEGACY_HUB_DIR = tmp_path / "legacy"
    write_snapshot(settings.LEGACY_HUB_DIR, "acme/mini-embed", C1, {"model.safetensors": WEIGHTS})
    write_snapshot(isolated_store, "acme/mini-embed", C2, {"model.safetensors": WEIGHTS})
    store_reconcile()
    assert Installation.objects.get().location == "primary"


def test_stale_installation_rows_are_replaced_by_disk_truth(isolated_store):
    inst = InstallationFactory()
    assert store_reconcile().uninstalled == [inst.model.key]


def test_cache_summary_reads_the_last_scan_without_walking(
    isolated_store, snapshot_model, monkeypatch
):
    write_snapshot(isolated_store, "other/repo", C1, {"model.safetensors": b"x" * 100})
    store_reconcile()

    def no_walk(*args, **kwargs):
        raise AssertionError("a read walked the store")

    monkeypatch.setattr("models_app.store.adapter.store_scan", no_walk)
    monkeypatch.setattr("models_app.store.adapter.repo_scan", no_walk)
    summary = selectors.cache_summary()
    assert summary["unmanaged_bytes"] == 100
    assert summary["free_disk_bytes"] > 0


def test_management_command(isolated_store, snapshot_model, capsys):
    write_snapshot(
        isolated_store, "acme/mini-embed", C1, {"config.json": CONFIG, "model.safetensors": WEIGHTS}
    )
    call_command("models_reconcile")
    assert "1 newly installed" in capsys.readouterr().out
