"""registry_sync: idempotent upserts, retirement of removed entries, extra files, bad files."""

import pytest
import yaml
from django.core.management import call_command

from models_app.errors import RegistryError
from models_app.models import Event, Model
from models_app.services import registry_sync
from tests.factories import CollectionFactory, InstallationFactory, ModelFactory

pytestmark = pytest.mark.django_db


def entry(key, **overrides):
    base = {
        "key": key,
        "repo_id": f"acme/{key}",
        "revision": "main",
        "type": "embedding",
        "name": key.title(),
        "description": "A test entry.",
        "family": "Acme",
        "parameter_count": 1000,
        "quantization": None,
        "files": {"gguf": None, "allow_patterns": ["*.safetensors", "*.json"]},
        "download_size": 4000,
        "context_window": 512,
        "embedding_dimension": 384,
        "pooling": "cls",
        "query_prefix": None,
        "document_prefix": None,
        "memory_estimates": {"float16": 2000},
        "ram_required": None,
        "sha256": {},
        "recommended": False,
        "tags": ["test"],
        "license": "mit",
    }
    return base | overrides


def write(path, *entries):
    path.write_text(yaml.safe_dump({"models": list(entries)}, sort_keys=False))
    return path


def test_shipped_registry_syncs_and_is_idempotent():
    first = registry_sync()
    assert len(first.created) >= 16 and not first.updated
    assert set(Model.objects.values_list("type", flat=True)) == {
        "embedding", "llm", "reranker", "splade",
    }  # fmt: skip
    stamp = dict(Model.objects.values_list("key", "updated_at"))
    events = Event.objects.count()
    second = registry_sync()
    assert second.created == [] and second.updated == [] and second.removed == []
    assert len(second.unchanged) == len(first.created)
    assert dict(Model.objects.values_list("key", "updated_at")) == stamp
    assert Event.objects.count() == events
    assert Model.objects.get(key=first.created[0]).registry_file.startswith("registry/")


def test_changed_entry_is_updated_in_place(tmp_path):
    f = write(tmp_path / "a.yaml", entry("alpha"), entry("beta"))
    registry_sync(paths=[f])
    pk = Model.objects.get(key="alpha").pk
    write(f, entry("alpha", description="Now better."), entry("beta"))
    result = registry_sync(paths=[f])
    assert result.updated == ["alpha"] and result.unchanged == ["beta"]
    alpha = Model.objects.get(key="alpha")
    assert alpha.pk == pk and alpha.description == "Now better."


def test_removed_entry_is_deleted_unless_installed_or_used(tmp_path):
    f = write(tmp_path / "a.yaml", entry("keep"), entry("gone"), entry("installed"), entry("used"))
    registry_sync(paths=[f])
    InstallationFactory(model=Model.objects.get(key="installed"))
    CollectionFactory(embedding_model=Model.objects.get(key="used"))
    write(f, entry("keep"))
    result = registry_sync(paths=[f])
    assert result.removed == ["gone"]
    assert sorted(result.retired) == ["installed", "used"]
    assert not Model.objects.filter(key="gone").exists()
    assert not Model.objects.get(key="installed").in_registry
    # Back in the YAML: curated again.
    write(f, entry("keep"), entry("installed"))
    registry_sync(paths=[f])
    assert Model.objects.get(key="installed").in_registry


def test_custom_entries_are_never_touched(tmp_path):
    custom = ModelFactory(key="my-own", source="custom")
    registry_sync(paths=[write(tmp_path / "a.yaml", entry("alpha"))])
    custom.refresh_from_db()
    assert custom.in_registry


def test_extra_registry_files_from_settings(settings, tmp_path):
    settings.MODEL_REGISTRY_FILES = [str(write(tmp_path / "extra.yaml", entry("extra-one")))]
    registry_sync()
    extra = Model.objects.get(key="extra-one")
    assert extra.source == "curated" and extra.registry_file.endswith("extra.yaml")


def test_invalid_file_writes_nothing(tmp_path):
    good = write(tmp_path / "a.yaml", entry("alpha"))
    bad = write(tmp_path / "b.yaml", entry("beta", download_size=-5))
    with pytest.raises(RegistryError) as info:
        registry_sync(paths=[good, bad])
    assert "b.yaml" in str(info.value) and "'beta'" in str(info.value)
    assert "download_size" in str(info.value)
    assert not Model.objects.exists()


def test_command_reports_and_maps_errors(settings, tmp_path, capsys):
    call_command("registry_sync")
    assert "created" in capsys.readouterr().out
    settings.MODEL_REGISTRY_FILES = [str(write(tmp_path / "b.yaml", entry("x", type="vision")))]
    with pytest.raises(SystemExit) as exit_info:
        call_command("registry_sync")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("ERR_REGISTRY: ") and "b.yaml" in err and "'type'" in err
