"""Custom entries by repo id, against a real hub test server and a real store."""

import pytest

from models_app import hub, services
from models_app.engine import operation_run
from models_app.errors import (
    AlreadyExists,
    AuthError,
    FormatError,
    Incompatible,
    InvalidInput,
    InvalidState,
    NotFound,
)
from models_app.models import Event, Installation, Model, ModelSource
from models_app.services.custom_models import (
    custom_model_add,
    custom_model_remove,
    custom_repo_inspect,
)
from models_app.services.custom_repo import quantization_of
from tests.custom_hub import (  # noqa: F401 (fixtures)
    BIG_PAYLOAD,
    BIG_REPO,
    EMBED_REPO,
    GATED_REPO,
    GATED_TOKEN,
    LLM_REPO,
    VOCAB_REPO,
    custom_hub_fixture,
    hub_custom_fixture,
)
from tests.factories import ModelFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "filename, quant",
    [
        ("custom-llm-Q4_K_M.gguf", "Q4_K_M"),
        ("Llama-3.2-1B-Instruct-q8_0.gguf", "Q8_0"),
        ("model.IQ4_XS.gguf", "IQ4_XS"),
        ("sub/qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
        ("nomic-embed-text-v1.5.f16.gguf", "F16"),
        ("plain.gguf", ""),
    ],
)
def test_quantization_is_parsed_from_the_file_name(filename, quant):
    assert quantization_of(filename) == quant


def test_inspect_offers_the_gguf_files_with_sizes(hub_custom):
    found = custom_repo_inspect(repo_id=LLM_REPO, revision="main")
    assert found.commit_hash == hub_custom.repo_commit(LLM_REPO)
    assert found.pipeline_tag == "text-generation"
    offered = {g.path: (g.size, g.quantization, g.sha256) for g in found.gguf_files}
    for path, quant in (("custom-llm-Q4_K_M.gguf", "Q4_K_M"), ("custom-llm-Q8_0.gguf", "Q8_0")):
        meta = hub_custom.file_meta(LLM_REPO, path)
        assert offered[path] == (meta.size, quant, meta.sha256)
    assert found.types == ["llm"]
    assert hub_custom.bytes_sent() == 0  # inspecting reads the listing, no file


def test_add_saves_a_not_installed_entry_with_the_header_facts(hub_custom, superuser):
    (model,) = custom_model_add(
        repo_id=LLM_REPO, type="llm", file="custom-llm-Q4_K_M.gguf", user=superuser,
        instruction="Answer briefly.",
    )  # fmt: skip
    meta = hub_custom.file_meta(LLM_REPO, "custom-llm-Q4_K_M.gguf")
    assert model.key == "custom-llm-q4_k_m"
    assert (model.source, model.added_by, model.type) == (ModelSource.CUSTOM, superuser, "llm")
    assert model.download_size == meta.size
    assert model.sha256 == {"custom-llm-Q4_K_M.gguf": meta.sha256}
    assert (model.context_window, model.quantization, model.family) == (2048, "Q4_K_M", "llama")
    assert model.parameter_count == model.gguf_facts["parameter_count"] > 0
    assert model.gguf_facts["source"] == "header"
    assert model.gguf_facts["commit_hash"] == hub_custom.repo_commit(LLM_REPO)
    assert model.ram_required and model.memory_estimates == {"Q4_K_M": model.ram_required}
    assert model.options == {"instruction": "Answer briefly."}
    assert not Installation.objects.filter(model=model).exists()
    assert Event.objects.get(kind="added", model=model).actor == superuser


def test_a_large_file_header_is_read_by_range_without_its_payload(hub_custom):
    (model,) = custom_model_add(repo_id=BIG_REPO, type="llm")
    size = hub_custom.file_meta(BIG_REPO, "big-Q4_K_M.gguf").size
    assert size > BIG_PAYLOAD
    sent = hub_custom.bytes_sent("big-Q4_K_M.gguf")
    assert 0 < sent <= 256 * 1024  # the first window holds this header
    assert hub_custom.ranges_seen("big-Q4_K_M.gguf") == ["bytes=0-262143"]
    assert model.context_window == 2048 and model.download_size == size


def test_a_large_vocabulary_takes_growing_windows(hub_custom, settings):
    header, reader = hub.gguf_header_remote(
        repo_id=VOCAB_REPO, commit="main", filename="vocab-Q4_K_M.gguf",
        endpoint=hub_custom.url, token=None,
    )  # fmt: skip
    assert header.metadata["tokenizer.ggml.tokens"].length == 30_000
    ranges = hub_custom.ranges_seen("vocab-Q4_K_M.gguf")
    assert ranges[:2] == ["bytes=0-262143", "bytes=262144-786431"]
    assert reader.requests == len(ranges) and hub_custom.bytes_sent("vocab-Q4_K_M.gguf") == (
        reader.fetched
    )


def test_a_header_past_the_cap_is_refused(hub_custom):
    with pytest.raises(FormatError, match="larger than 65,536 bytes"):
        hub.gguf_header_remote(
            repo_id=VOCAB_REPO, commit="main", filename="vocab-Q4_K_M.gguf",
            endpoint=hub_custom.url, token=None, cap=64 * 1024,
        )  # fmt: skip
    assert hub_custom.bytes_sent("vocab-Q4_K_M.gguf") <= 64 * 1024


def test_one_entry_per_chosen_file(hub_custom):
    models = custom_model_add(
        repo_id=LLM_REPO, type="llm", files=["custom-llm-Q4_K_M.gguf", "custom-llm-Q8_0.gguf"],
        name="My LLM",
    )  # fmt: skip
    assert [(m.key, m.name, m.quantization) for m in models] == [
        ("custom-llm-q4_k_m", "My LLM Q4_K_M", "Q4_K_M"),
        ("custom-llm-q8_0", "My LLM Q8_0", "Q8_0"),
    ]


def test_several_gguf_files_need_a_choice(hub_custom):
    with pytest.raises(InvalidInput) as caught:
        custom_model_add(repo_id=LLM_REPO, type="llm")
    assert set(caught.value.details["gguf_files"]) == {
        "custom-llm-Q4_K_M.gguf", "custom-llm-Q8_0.gguf",
    }  # fmt: skip
    assert not Model.objects.exists()


def test_a_taken_key_gets_the_owner_prefix(hub_custom):
    ModelFactory(key="custom-llm-q4_k_m", repo_id="other/custom-llm-GGUF")
    (model,) = custom_model_add(repo_id=LLM_REPO, type="llm", file="custom-llm-Q4_K_M.gguf")
    assert model.key == "acme-custom-llm-q4_k_m"


def test_a_duplicate_is_err_already_exists(hub_custom):
    custom_model_add(repo_id=LLM_REPO, type="llm", file="custom-llm-Q4_K_M.gguf")
    with pytest.raises(AlreadyExists, match="custom-llm-q4_k_m"):
        custom_model_add(repo_id=LLM_REPO, type="llm", file="custom-llm-Q4_K_M.gguf")
    assert Model.objects.count() == 1


@pytest.mark.parametrize(
    "repo_id, revision, file",
    [
        ("acme/no-such-repo", "main", None),
        (LLM_REPO, "no-such-branch", None),
        (LLM_REPO, "main", "custom-llm-Q2_K.gguf"),
    ],
    ids=["repo", "revision", "file"],
)
def test_unknown_repo_revision_or_file_is_err_not_found(hub_custom, repo_id, revision, file):
    with pytest.raises(NotFound):
        custom_model_add(repo_id=repo_id, revision=revision, type="llm", file=file)
    assert not Model.objects.exists()


def test_a_gated_repo_without_access_is_err_auth_saying_what_to_do(hub_custom, settings):
    with pytest.raises(AuthError) as caught:
        custom_repo_inspect(repo_id=GATED_REPO)
    assert "Accept its terms" in caught.value.message and "HF_TOKEN" in caught.value.message
    settings.HF_TOKEN = "hf_someone_else"
    with pytest.raises(AuthError):
        custom_model_add(repo_id=GATED_REPO, type="llm")
    assert not Model.objects.exists()

    settings.HF_TOKEN = GATED_TOKEN
    (model,) = custom_model_add(repo_id=GATED_REPO, type="llm")
    assert model.context_window == 2048  # the header, read with the token


@pytest.mark.parametrize(
    "repo_id, type_, file, says",
    [
        (LLM_REPO, "embedding", "custom-llm-Q4_K_M.gguf", "tagged 'text-generation'"),
        (EMBED_REPO, "llm", None, "tagged 'sentence-similarity'"),
        (EMBED_REPO, "reranker", None, "not a reranker model"),
    ],
)
def test_a_type_the_pipeline_tag_contradicts_is_err_incompatible(
    hub_custom, repo_id, type_, file, says
):
    with pytest.raises(Incompatible, match=says):
        custom_model_add(repo_id=repo_id, type=type_, file=file)
    assert not Model.objects.exists()


def test_a_type_the_files_contradict_is_err_incompatible(hub_custom):
    hub_custom.set_repo_meta(EMBED_REPO, pipeline_tag=None)
    hub_custom.set_repo_meta(BIG_REPO, pipeline_tag=None)
    try:
        with pytest.raises(Incompatible, match=r"no \.gguf file"):
            custom_model_add(repo_id=EMBED_REPO, type="llm")
        with pytest.raises(Incompatible, match="cannot be a GGUF file"):
            custom_model_add(repo_id=BIG_REPO, type="splade", file="big-Q4_K_M.gguf")
        with pytest.raises(Incompatible, match=r"no config\.json with safetensors"):
            custom_model_add(repo_id=BIG_REPO, type="splade")
    finally:
        hub_custom.set_repo_meta(EMBED_REPO, pipeline_tag="sentence-similarity")
        hub_custom.set_repo_meta(BIG_REPO, pipeline_tag="text-generation")


def test_a_snapshot_entry_takes_config_tokenizer_modules_and_weights(hub_custom):
    (model,) = custom_model_add(
        repo_id=EMBED_REPO, type="embedding", dimension=64, pooling="cls",
        query_prefix="query: ", document_prefix="passage: ",
    )  # fmt: skip
    assert model.allow_patterns == [
        "1_Pooling/config.json", "config.json", "model.safetensors", "tokenizer.json",
    ]  # fmt: skip
    sizes = [hub_custom.file_meta(EMBED_REPO, p).size for p in model.allow_patterns]
    assert model.download_size == sum(sizes)
    assert set(model.sha256) == {"model.safetensors"}
    assert (model.embedding_dimension, model.pooling) == (64, "cls")
    assert (model.query_prefix, model.document_prefix) == ("query: ", "passage: ")


def _download(model):
    result = services.download_start(model=model)
    assert operation_run(operation_id=result.operation.id) == "succeeded"


def test_removal_is_refused_while_installed_unless_the_files_go(hub_custom, isolated_store):
    (model,) = custom_model_add(repo_id=EMBED_REPO, type="embedding")
    _download(model)
    with pytest.raises(InvalidState, match="delete its files first"):
        custom_model_remove(model=model)
    assert Model.objects.filter(pk=model.pk).exists()

    done = custom_model_remove(model=model, delete_files=True)
    assert done["removed"] and done["bytes_freed"] > 0
    assert not Model.objects.filter(pk=model.pk).exists()
    assert not list((isolated_store / "models--acme--custom-embed").rglob("*.safetensors"))
    removed = Event.objects.get(kind="removed")
    assert removed.model is None and removed.data["key"] == model.key
    assert Event.objects.filter(kind="deleted").exists()


def test_a_not_installed_entry_is_removed(hub_custom):
    (model,) = custom_model_add(repo_id=LLM_REPO, type="llm", file="custom-llm-Q8_0.gguf")
    assert custom_model_remove(model=model) == {
        "model": model.key, "removed": True, "bytes_freed": 0,
    }  # fmt: skip
    assert not Model.objects.exists()


def test_a_curated_entry_cannot_be_removed(db):
    model = ModelFactory(source=ModelSource.CURATED)
    with pytest.raises(InvalidState, match="only custom and local entries"):
        custom_model_remove(model=model)
    assert Model.objects.filter(pk=model.pk).exists()


def test_a_registry_sync_leaves_a_custom_entry_with_a_curated_key_alone(hub_custom):
    from django.conf import settings

    from models_app.registry import load_registry, registry_paths

    paths = registry_paths(
        registry_dir=settings.REGISTRY_DIR, extra_files=settings.MODEL_REGISTRY_FILES
    )
    curated_key = load_registry(paths)[0].key
    custom = ModelFactory(key=curated_key, source=ModelSource.CUSTOM, name="Mine")
    result = services.registry_sync()
    assert curated_key in result.conflicts
    custom.refresh_from_db()
    assert (custom.source, custom.name) == (ModelSource.CUSTOM, "Mine")
    services.registry_sync()
    assert Model.objects.filter(pk=custom.pk).exists()
