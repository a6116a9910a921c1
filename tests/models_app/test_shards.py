"""Sharded GGUF (`name-00001-of-00003.gguf`): names, registry, download, install state, delete.

Real files: a tiny llama GGUF (tests/gguf_files.py) split in three by the `gguf` package's
own split writer (tests/gguf_shards.py), served by the real hub test server, downloaded
into a real store.
"""

import textwrap

import pytest

from models_app import services
from models_app.engine import operation_run
from models_app.errors import FormatError, InvalidInput, NotInstalled, RegistryError
from models_app.gguf import gguf_header_of
from models_app.gguf_split import gguf_file_names, gguf_shard_names
from models_app.models import Installation, Model, Operation
from models_app.registry import load_registry_file
from models_app.runtime.memory import memory_estimate
from models_app.selectors import latest_scan
from models_app.services.model_facts import ram_required_estimate
from tests.factories import ModelFactory
from tests.gguf_files import llama_metadata, write_gguf
from tests.gguf_shards import gguf_split
from tests.hub_server import make_repo

REPO = "shards/tiny-split-GGUF"
FIRST = "tiny-split-00001-of-00003.gguf"
SHARDS = [FIRST, "tiny-split-00002-of-00003.gguf", "tiny-split-00003-of-00003.gguf"]
SINGLE = "tiny-single.gguf"
PARTIAL_REPO = "shards/tiny-split-partial-GGUF"  # shards 1 and 2 only
API = "/api/v1"


# --- the shard names --------------------------------------------------------------------


def test_shard_names_follow_from_the_first():
    assert gguf_shard_names(FIRST) == SHARDS
    assert gguf_shard_names("Q4_K_M/m-00001-of-00002.gguf") == [
        "Q4_K_M/m-00001-of-00002.gguf",
        "Q4_K_M/m-00002-of-00002.gguf",
    ]
    assert gguf_shard_names("m-00001-of-00001.gguf") == ["m-00001-of-00001.gguf"]
    assert len(gguf_shard_names("big-00001-of-00012.gguf")) == 12


def test_a_single_file_is_its_own_list():
    assert gguf_file_names("model-q4_k_m.gguf") == ["model-q4_k_m.gguf"]
    assert gguf_file_names(FIRST) == SHARDS


def test_a_later_shard_named_as_first_is_refused_naming_the_first():
    with pytest.raises(InvalidInput) as info:
        gguf_shard_names("tiny-split-00002-of-00003.gguf")
    assert info.value.code == "ERR_INVALID"
    assert "shard 2 of 3" in info.value.message
    assert FIRST in info.value.message


@pytest.mark.parametrize(
    "name",
    [
        "m-1-of-3.gguf",  # llama.cpp writes five digits each
        "m-00001-of-3.gguf",
        "m-00001-of-00000.gguf",  # no shards
        "m-00004-of-00003.gguf",  # past the count
        "-00001-of-00003.gguf",  # no name before the numbers
        "dir/-00001-of-00003.gguf",
        "m-00001-of-00003.GGUF",
        "m.gguf",  # not a shard at all, asked as one
    ],
)
def test_malformed_names_are_refused_clearly(name):
    with pytest.raises(InvalidInput) as info:
        gguf_shard_names(name)
    assert repr(name) in info.value.message
    assert info.value.details["file"] == name


def test_a_malformed_name_in_a_row_stands_for_itself():
    model = Model(gguf_file="m-00002-of-00003.gguf")
    assert model.file_patterns == ["m-00002-of-00003.gguf"]
    assert Model(gguf_file=FIRST).file_patterns == SHARDS


# --- the registry -----------------------------------------------------------------------


def registry_yaml(tmp_path, gguf):
    path = tmp_path / "split.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            models:
              - key: tiny-split
                repo_id: {REPO}
                type: llm
                name: Tiny split
                description: A GGUF in three shards.
                files:
                  gguf: {gguf}
            """
        )
    )
    return path


def test_the_registry_takes_a_split_entry_by_its_first_shard(tmp_path, db):
    (entry,) = load_registry_file(registry_yaml(tmp_path, FIRST))
    assert entry.gguf_file == FIRST
    result = services.registry_sync(paths=[registry_yaml(tmp_path, FIRST)])
    assert result.created == ["tiny-split"]
    assert Model.objects.get(key="tiny-split").file_patterns == SHARDS


def test_the_registry_refuses_a_later_shard_naming_the_field(tmp_path):
    with pytest.raises(RegistryError) as info:
        load_registry_file(registry_yaml(tmp_path, "tiny-split-00003-of-00003.gguf"))
    assert info.value.details["field"] == "files.gguf"
    assert "shard 3 of 3" in info.value.message and FIRST in info.value.message


# --- a sharded repo on the hub ------------------------------------------------------------


@pytest.fixture(scope="module")
def split_repo(hub_server, tmp_path_factory):
    """Serve REPO: a tiny GGUF split in three, and one unsplit GGUF beside it."""
    work = tmp_path_factory.mktemp("split")
    whole = write_gguf(work / "whole.gguf", metadata=llama_metadata())
    shards = gguf_split(whole, work / "out", stem="tiny-split", parts=3)
    assert [p.name for p in shards] == SHARDS
    files = {p.name: p.read_bytes() for p in shards}
    files[SINGLE] = whole.read_bytes()
    make_repo(hub_server.root, REPO, files)
    make_repo(hub_server.root, PARTIAL_REPO, {n: files[n] for n in SHARDS[:2]})
    return {"whole": gguf_header_of(whole), "sizes": {n: len(b) for n, b in files.items()}}


@pytest.fixture
def split_model(db, split_repo):
    return ModelFactory(
        key="tiny-split", repo_id=REPO, type="llm", gguf_file=FIRST, allow_patterns=[],
        download_size=None,
    )  # fmt: skip


def download(model):
    result = services.download_start(model=model)
    assert result.created, result.message
    state = operation_run(operation_id=result.operation.id)
    op = Operation.objects.get(pk=result.operation.id)
    assert state == "succeeded", op.error_message
    return op


def blobs(store, repo_id=REPO):
    folder = store / ("models--" + repo_id.replace("/", "--")) / "blobs"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_download_fetches_every_shard(hub, split_repo, split_model, isolated_store):
    op = download(split_model)
    sizes = split_repo["sizes"]
    assert sorted(f["path"] for f in op.plan) == SHARDS
    assert op.bytes_total == op.bytes_done == sum(sizes[n] for n in SHARDS)
    for name in SHARDS:
        assert hub.bytes_sent(f"{REPO}/{name}") == sizes[name]
    assert hub.bytes_sent(f"{REPO}/{SINGLE}") == 0
    inst = Installation.objects.get(model=split_model)
    assert inst.files == SHARDS and inst.verified_at is not None
    assert inst.size_on_disk == sum(sizes[n] for n in SHARDS)
    assert len(blobs(isolated_store)) == 3
    snapshot = isolated_store / "models--shards--tiny-split-GGUF" / "snapshots" / op.commit_hash
    assert sorted(p.name for p in snapshot.iterdir()) == SHARDS


def test_the_facts_are_the_first_shards_with_the_weights_of_all(hub, split_repo, split_model):
    download(split_model)
    split_model.refresh_from_db()
    facts, whole = split_model.gguf_facts, split_repo["whole"]
    assert facts["source"] == "header" and facts["split_count"] == 3 and facts["split_no"] == 0
    assert facts["block_count"] == 2 and facts["vocab_size"] == 100  # from the first shard
    assert facts["tensor_bytes"] == whole.tensor_bytes  # every shard's tensors
    assert facts["parameter_count"] == sum(t.n_elements for t in whole.tensors)
    assert sum(facts["shard_tensor_bytes"]) == whole.tensor_bytes
    assert facts["shard_tensor_bytes"][0] < whole.tensor_bytes
    # The memory estimate counts the weights of every shard.
    assert memory_estimate(facts=facts, n_ctx=512).weights == whole.tensor_bytes
    assert split_model.ram_required == ram_required_estimate(facts=facts, file_size=None)
    # Facts of the first shard alone (a header read before the download) do not pass its
    # tensors off as the weights: the download size stands for them, else nothing does.
    first_only = {k: v for k, v in facts.items() if k != "shard_tensor_bytes"}
    first_only["tensor_bytes"] = facts["shard_tensor_bytes"][0]
    assert memory_estimate(facts=first_only, n_ctx=512, file_size=10**6).weights == 10**6
    with pytest.raises(FormatError):
        memory_estimate(facts=first_only, n_ctx=512)


def test_a_shard_missing_on_the_hub_fails_the_download_naming_it(hub, split_repo, db):
    model = ModelFactory(
        key="tiny-partial", repo_id=PARTIAL_REPO, type="llm", gguf_file=FIRST,
        allow_patterns=[],
    )  # fmt: skip
    result = services.download_start(model=model)
    assert operation_run(operation_id=result.operation.id) == "failed"
    op = Operation.objects.get(pk=result.operation.id)
    assert op.error_code == "ERR_NOT_FOUND" and SHARDS[2] in op.error_message
    assert hub.bytes_sent() == 0
    assert not Installation.objects.filter(model=model).exists()


def test_the_disk_preflight_counts_every_shard(hub, split_repo, split_model, settings):
    settings.AUTO_PRUNE = False
    settings.DOWNLOAD_DISK_RESERVE = 10**18  # more than any disk: the preflight must refuse
    result = services.download_start(model=split_model)
    assert operation_run(operation_id=result.operation.id) == "failed"
    op = Operation.objects.get(pk=result.operation.id)
    assert op.error_code == "ERR_DISK_SPACE"
    needed = sum(split_repo["sizes"][n] for n in SHARDS)
    assert f"needs {needed:,} more bytes" in op.error_message
    assert all(hub.bytes_sent(f"{REPO}/{n}") == 0 for n in SHARDS)


def card_html(client) -> str:
    """Return the LLM tab's card of the split entry."""
    html = client.get("/settings/models/?type=llm&q=tiny-split").content.decode()
    start = html.index('data-model="tiny-split"') if 'data-model="tiny-split"' in html else 0
    return html[start:]


def test_the_card_says_the_model_is_in_shards(hub, split_model, superuser_client):
    download(split_model)
    card = card_html(superuser_client)
    assert "on disk in 3 shards" in card and 'data-testid="status">Installed<' in card


def test_a_missing_shard_link_makes_it_not_installed(
    hub, split_repo, split_model, isolated_store, superuser_client
):
    op = download(split_model)
    snapshot = isolated_store / "models--shards--tiny-split-GGUF" / "snapshots" / op.commit_hash
    (snapshot / SHARDS[1]).unlink()
    services.store_reconcile()
    assert not Installation.objects.filter(model=split_model).exists()
    body = superuser_client.get(f"{API}/models/tiny-split").json()
    assert body["installed"] is False and body["installation"] is None
    card = card_html(superuser_client)
    assert "Download size unknown in 3 shards" in card
    assert 'data-testid="status">Available<' in card
    (warning,) = [w for w in latest_scan().warnings if "tiny-split" in w]
    assert "incomplete: 2 of 3 shards" in warning and SHARDS[1] in warning
    assert str(isolated_store) not in warning

    # A new download fetches the missing shard only (its blob is still there: no bytes).
    hub.reset_counters()
    again = download(split_model)
    assert again.commit_hash == op.commit_hash
    assert hub.bytes_sent() == 0
    assert Installation.objects.get(model=split_model).files == SHARDS
    assert not [w for w in latest_scan().warnings if "tiny-split" in w]


def test_a_missing_shard_blob_makes_it_not_installed(hub, split_repo, split_model, isolated_store):
    download(split_model)
    folder = isolated_store / "models--shards--tiny-split-GGUF"
    shard3 = next(p for p in (folder / "snapshots").glob(f"*/{SHARDS[2]}"))
    shard3.resolve().unlink()  # the blob goes, the snapshot's link dangles
    services.store_reconcile()
    assert not Installation.objects.filter(model=split_model).exists()

    hub.reset_counters()
    download(split_model)
    assert hub.bytes_sent(f"{REPO}/{SHARDS[2]}") == split_repo["sizes"][SHARDS[2]]
    assert hub.bytes_sent(f"{REPO}/{SHARDS[0]}") == hub.bytes_sent(f"{REPO}/{SHARDS[1]}") == 0
    assert Installation.objects.filter(model=split_model).exists()


def delete(model):
    result = services.delete_start(model=model, confirm=True)
    assert result.created, result.message
    assert operation_run(operation_id=result.operation.id) == "succeeded"


def test_a_delete_removes_every_shard(hub, split_model, isolated_store):
    download(split_model)
    assert len(blobs(isolated_store)) == 3
    delete(split_model)
    assert not Installation.objects.filter(model=split_model).exists()
    assert blobs(isolated_store) == []


def test_a_delete_beside_another_entry_removes_every_shard_and_keeps_it(
    hub, split_repo, split_model, isolated_store
):
    single = ModelFactory(
        key="tiny-single", repo_id=REPO, type="llm", gguf_file=SINGLE, allow_patterns=[]
    )
    download(split_model)
    download(single)
    assert len(blobs(isolated_store)) == 4
    delete(split_model)
    assert not Installation.objects.filter(model=split_model).exists()
    assert Installation.objects.get(model=single).files == [SINGLE]
    assert len(blobs(isolated_store)) == 1
    snapshots = isolated_store / "models--shards--tiny-split-GGUF" / "snapshots"
    assert [p.name for p in snapshots.glob("*/*")] == [SINGLE]


def test_a_load_with_a_shard_gone_is_refused_naming_it(hub, split_model, isolated_store):
    from models_app.services.runtime import runtime_load_start

    op = download(split_model)
    snapshot = isolated_store / "models--shards--tiny-split-GGUF" / "snapshots" / op.commit_hash
    (snapshot / SHARDS[2]).unlink()  # gone since the last reconcile
    with pytest.raises(NotInstalled) as info:
        runtime_load_start(model=split_model)
    assert info.value.details == {"model": "tiny-split", "file": SHARDS[2]}
    assert SHARDS[2] in info.value.message and str(isolated_store) not in info.value.message


def test_shards_that_disagree_with_their_place_are_refused(tmp_path):
    from models_app.gguf import gguf_facts
    from models_app.gguf_split import gguf_split_facts

    whole = write_gguf(tmp_path / "whole.gguf", metadata=llama_metadata())
    headers = [gguf_header_of(p) for p in gguf_split(whole, tmp_path / "out", stem="t", parts=3)]
    facts = gguf_facts(headers[0])
    assert gguf_split_facts(facts, headers)["tensor_bytes"] == gguf_header_of(whole).tensor_bytes
    with pytest.raises(FormatError) as swapped:
        gguf_split_facts(facts, [headers[0], headers[2], headers[1]])
    assert "Shard 2 of 3 says it is shard 3 of 3" in swapped.value.message
    with pytest.raises(FormatError) as short:
        gguf_split_facts(facts, headers[:2])
    assert "Shard 1 of 2 says it is shard 1 of 3" in short.value.message
