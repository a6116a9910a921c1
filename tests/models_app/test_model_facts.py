"""ram_required becomes a real number: from the registry's facts, then the installed header.

Real files: tiny GGUFs written by GGUFWriter into a real hub cache layout, and a real hub
server on 127.0.0.1 for the download path.
"""

import logging

import pytest
import yaml

from models_app.engine import operation_run
from models_app.errors import FormatError, NotInstalled
from models_app.gguf import gguf_facts, gguf_header_of
from models_app.models import Model, Operation
from models_app.runtime.memory import memory_estimate
from models_app.services import download_start, registry_sync, store_reconcile
from models_app.services.model_facts import model_facts_refresh
from tests.factories import InstallationFactory, ModelFactory
from tests.gguf_files import llama_metadata, write_gguf
from tests.hub_cache import write_snapshot

pytestmark = pytest.mark.django_db

COMMIT = "a" * 40
FACTS = {
    "architecture": "qwen2",
    "block_count": 28,
    "embedding_length": 1536,
    "head_count": 12,
    "head_count_kv": 2,
    "key_length": 128,
    "value_length": 128,
    "context_length": 32768,
    "vocab_size": 151936,
}


def _entry(key, **overrides):
    base = {
        "key": key,
        "repo_id": f"acme/{key}",
        "type": "llm",
        "name": key.title(),
        "description": "A test entry.",
        "quantization": "Q4_K_M",
        "files": {"gguf": f"{key}.gguf"},
        "download_size": 986_000_000,
    }
    return base | overrides


def _sync(tmp_path, *entries):
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump({"models": list(entries)}, sort_keys=False))
    return registry_sync(paths=[path])


@pytest.fixture
def tiny_gguf(tmp_path) -> bytes:
    return write_gguf(tmp_path / "tiny.gguf", metadata=llama_metadata()).read_bytes()


def test_registry_facts_give_ram_required(tmp_path, settings):
    settings.RUNTIME_DEFAULT_N_CTX = 4096
    _sync(tmp_path, _entry("with-facts", gguf_facts=FACTS), _entry("without"))
    model = Model.objects.get(key="with-facts")
    assert model.gguf_facts == {**FACTS, "source": "registry"}
    expected = memory_estimate(facts=FACTS, n_ctx=4096, file_size=986_000_000).total
    assert model.ram_required == expected
    bare = Model.objects.get(key="without")
    assert bare.gguf_facts == {} and bare.ram_required is None


def test_an_explicit_ram_required_in_the_yaml_stands(tmp_path):
    _sync(tmp_path, _entry("explicit", gguf_facts=FACTS, ram_required=5_000_000_000))
    assert Model.objects.get(key="explicit").ram_required == 5_000_000_000


def test_reconcile_reads_a_newly_installed_gguf(isolated_store, tiny_gguf, settings):
    settings.RUNTIME_DEFAULT_N_CTX = 1024
    model = ModelFactory(
        key="tiny", repo_id="acme/tiny-GGUF", type="llm", gguf_file="tiny.gguf", allow_patterns=[]
    )
    snapshot = write_snapshot(isolated_store, "acme/tiny-GGUF", COMMIT, {"tiny.gguf": tiny_gguf})
    result = store_reconcile()
    assert result.installed == ["tiny"]
    model.refresh_from_db()
    header_facts = gguf_facts(gguf_header_of(snapshot / "tiny.gguf"))
    assert model.gguf_facts == {**header_facts, "source": "header", "commit_hash": COMMIT}
    # 1024 is within the file's 2048 trained context.
    assert model.ram_required == memory_estimate(facts=header_facts, n_ctx=1024).total


def test_a_second_reconcile_does_not_read_the_header_again(isolated_store, tiny_gguf):
    model = ModelFactory(
        key="tiny", repo_id="acme/tiny-GGUF", type="llm", gguf_file="tiny.gguf", allow_patterns=[]
    )
    write_snapshot(isolated_store, "acme/tiny-GGUF", COMMIT, {"tiny.gguf": tiny_gguf})
    store_reconcile()
    stamp = Model.objects.get(pk=model.pk).updated_at
    store_reconcile()
    assert Model.objects.get(pk=model.pk).updated_at == stamp


def test_a_header_that_cannot_be_read_is_logged_and_reconcile_goes_on(isolated_store, caplog):
    model = ModelFactory(
        key="junk", repo_id="acme/junk-GGUF", type="llm", gguf_file="junk.gguf", allow_patterns=[]
    )
    write_snapshot(isolated_store, "acme/junk-GGUF", COMMIT, {"junk.gguf": b"PK\x03\x04" * 64})
    with caplog.at_level(logging.WARNING, logger="models_app.services.model_facts"):
        result = store_reconcile()
    assert result.installed == ["junk"]
    model.refresh_from_db()
    assert model.gguf_facts == {} and model.ram_required is None
    (record,) = caplog.records
    assert "GGUF facts of junk not read" in record.getMessage()
    assert "Not a GGUF file" in record.getMessage()


def test_the_installed_header_outlasts_a_registry_sync(tmp_path, isolated_store, tiny_gguf):
    _sync(tmp_path, _entry("tiny", gguf_facts=FACTS))
    write_snapshot(isolated_store, "acme/tiny", COMMIT, {"tiny.gguf": tiny_gguf})
    store_reconcile()
    read = Model.objects.get(key="tiny").gguf_facts
    assert read["source"] == "header" and read["block_count"] == 2
    result = _sync(tmp_path, _entry("tiny", gguf_facts=FACTS))
    assert result.unchanged == ["tiny"]
    assert Model.objects.get(key="tiny").gguf_facts == read


def test_refresh_needs_an_installed_gguf():
    model = ModelFactory(key="embed")
    InstallationFactory(model=model)
    with pytest.raises(NotInstalled, match="embed has no installed GGUF file"):
        model_facts_refresh(model=model)


def test_refresh_of_a_missing_file_names_the_file_not_the_store(isolated_store):
    model = ModelFactory(
        key="gone", repo_id="acme/gone-GGUF", type="llm", gguf_file="gone.gguf", allow_patterns=[]
    )
    InstallationFactory(model=model, commit_hash=COMMIT, files=["gone.gguf"])
    with pytest.raises(FormatError) as info:
        model_facts_refresh(model=model)
    assert "gone.gguf of gone" in info.value.message
    assert str(isolated_store) not in info.value.message


# --- the download path --------------------------------------------------------------------


@pytest.fixture
def gguf_hub(tmp_path_factory, settings):
    """A hub on 127.0.0.1 serving one repo with a real tiny GGUF."""
    from tests.hub_server import HubServer, make_repo

    root = tmp_path_factory.mktemp("gguf-hub")
    path = write_gguf(root / "tiny.gguf", metadata=llama_metadata())
    make_repo(root, "acme/real-GGUF", {"real-q4_k_m.gguf": path.read_bytes()})
    path.unlink()
    server = HubServer(root).start()
    settings.HF_ENDPOINT = server.url
    settings.DOWNLOAD_DISK_RESERVE = 0
    yield server
    server.stop()


def test_a_gguf_download_reads_its_header(gguf_hub):
    model = ModelFactory(
        key="real-q4",
        repo_id="acme/real-GGUF",
        type="llm",
        gguf_file="real-q4_k_m.gguf",
        allow_patterns=[],
    )
    result = download_start(model=model)
    operation_run(operation_id=result.operation.id)
    assert Operation.objects.get(pk=result.operation.id).state == "succeeded"
    model.refresh_from_db()
    assert model.gguf_facts["source"] == "header"
    assert model.gguf_facts["architecture"] == "llama"
    assert model.gguf_facts["commit_hash"] == model.installation.commit_hash
    assert model.ram_required > 0
