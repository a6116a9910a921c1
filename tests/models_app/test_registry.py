"""The registry loader: the shipped YAML files, and one test per way a file can be wrong.

Pure tests: real YAML files on disk under tmp_path, no database.
"""

from collections import Counter
from pathlib import Path

import pytest
import yaml

from models_app.constants import MODEL_KEY_RE, MODEL_TYPES, REPO_ID_RE
from models_app.errors import RegistryError
from models_app.registry import (
    RegistryEntry,
    load_registry,
    load_registry_file,
    registry_paths,
)

REGISTRY_DIR = Path(__file__).resolve().parents[2] / "registry"
GGUF_FACTS = {
    "architecture": "llama",
    "block_count": 2,
    "embedding_length": 64,
    "head_count": 8,
    "head_count_kv": 2,
    "key_length": 8,
    "value_length": 8,
    "context_length": 2048,
    "vocab_size": 100,
}
_DROP = object()  # a valid_entry() change that removes the field


def valid_entry(**changes):
    entry = {
        "key": "tiny-embed",
        "repo_id": "org/tiny-embed",
        "revision": "main",
        "type": "embedding",
        "name": "Tiny embed",
        "description": "A test entry.",
        "files": {"allow_patterns": ["*.json", "model.safetensors"]},
        "download_size": 1000,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not _DROP}


def write_registry(tmp_path, entries, name="custom.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False), encoding="utf-8")
    return path


def write_text(tmp_path, text, name="custom.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        load_registry([path])
    return caught.value


def assert_names(err: RegistryError, path, entry, field):
    """Assert the message and the details name the file, the entry and the field."""
    assert str(path) in err.message
    assert err.file == str(path)
    assert err.entry == entry
    assert f"entry {entry}" in err.message
    assert err.field == field
    assert f"field {field!r}" in err.message
    assert err.code == "ERR_REGISTRY"


# --- the shipped registry ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return load_registry(registry_paths(registry_dir=REGISTRY_DIR, extra_files=[]))


def test_shipped_registry_loads_and_covers_every_type(shipped):
    assert len(shipped) >= 16
    assert set(Counter(e.type for e in shipped)) == set(MODEL_TYPES)


def test_shipped_keys_are_unique(shipped):
    keys = [e.key for e in shipped]
    assert len(keys) == len(set(keys))


def test_every_shipped_llm_is_one_gguf_file(shipped):
    for entry in shipped:
        if entry.type == "llm":
            assert entry.gguf_file and entry.gguf_file.endswith(".gguf"), entry.key
            assert entry.allow_patterns is None, entry.key
            assert entry.quantization, entry.key
        elif entry.gguf_file is None:
            assert entry.allow_patterns, entry.key


def test_embeddings_and_rerankers_have_gguf_entries_the_runtime_serves(shipped):
    gguf = Counter(e.type for e in shipped if e.gguf_file)
    assert gguf["embedding"] >= 2 and gguf["reranker"] >= 1
    assert "splade" not in gguf
    for entry in shipped:
        if entry.gguf_file and entry.type != "llm":
            assert entry.quantization and entry.download_size, entry.key
            # A digest pinned for a GGUF entry is its one file's.
            assert set(entry.sha256 or {}) <= {entry.gguf_file}, entry.key


def test_shipped_gguf_facts_give_every_llm_that_has_them_a_requirement(shipped):
    from models_app.runtime.memory import memory_estimate

    with_facts = [e for e in shipped if e.gguf_facts]
    assert {e.type for e in with_facts} >= {"llm"}
    for entry in with_facts:
        facts = entry.model_fields_for_db()["gguf_facts"]
        assert facts["source"] == "registry"
        estimate = memory_estimate(facts=facts, n_ctx=4096, file_size=entry.download_size)
        assert estimate.total > entry.download_size, entry.key


def test_shipped_registry_marks_recommended_models_per_type(shipped):
    recommended = Counter(e.type for e in shipped if e.recommended)
    assert set(recommended) == set(MODEL_TYPES)
    assert all(count <= 2 for count in recommended.values())


def test_shipped_entries_fit_the_model_columns(shipped):
    from models_app.models import Model

    for entry in shipped:
        row = Model(key=entry.key, **entry.model_fields_for_db())
        # No database: column lengths, choices and regexes only.
        row.full_clean(validate_unique=False, validate_constraints=False)


def test_constants_match_the_model_definitions():
    from models_app import models

    assert tuple(models.ModelType.values) == MODEL_TYPES
    assert models.REPO_ID_RE == REPO_ID_RE
    assert models.MODEL_KEY_RE == MODEL_KEY_RE


# --- what an entry becomes ---------------------------------------------------------------


def test_fields_for_db_turn_missing_values_into_column_defaults(tmp_path):
    path = write_registry(tmp_path, [valid_entry()])
    (entry,) = load_registry_file(path)
    fields = entry.model_fields_for_db()

    assert "key" not in fields
    assert fields["type"] == "embedding" and type(fields["type"]) is str
    assert fields["gguf_file"] == ""
    assert fields["allow_patterns"] == ["*.json", "model.safetensors"]
    assert fields["family"] == fields["quantization"] == fields["pooling"] == ""
    assert fields["query_prefix"] == fields["document_prefix"] == fields["license"] == ""
    assert fields["memory_estimates"] == {} and fields["sha256"] == {}
    assert fields["tags"] == []
    assert fields["parameter_count"] is None and fields["ram_required"] is None
    assert fields["download_size"] == 1000
    assert fields["revision"] == "main" and fields["recommended"] is False


def test_an_embedding_gguf_entry_with_facts(tmp_path):
    raw = valid_entry(files={"gguf": "e.gguf"}, quantization="Q8_0", gguf_facts=GGUF_FACTS)
    (entry,) = load_registry_file(write_registry(tmp_path, [raw]))
    fields = entry.model_fields_for_db()
    assert fields["gguf_file"] == "e.gguf" and fields["type"] == "embedding"
    assert fields["gguf_facts"] == {**GGUF_FACTS, "source": "registry"}


def test_gguf_entry_is_flattened(tmp_path):
    gguf = valid_entry(
        key="tiny-llm-q4",
        type="llm",
        quantization="Q4_K_M",
        files={"gguf": "tiny-Q4_K_M.gguf"},
        memory_estimates={"Q4_K_M": 900},
    )
    (entry,) = load_registry_file(write_registry(tmp_path, [gguf]))

    assert entry.gguf_file == "tiny-Q4_K_M.gguf"
    assert entry.allow_patterns is None
    assert entry.model_fields_for_db()["gguf_file"] == "tiny-Q4_K_M.gguf"
    assert entry.model_fields_for_db()["allow_patterns"] == []


def test_prefixes_keep_their_whitespace(tmp_path):
    path = write_registry(tmp_path, [valid_entry(query_prefix="query: ", document_prefix=" ")])
    (entry,) = load_registry_file(path)
    assert entry.query_prefix == "query: "
    assert entry.document_prefix == " "


def test_entries_remember_their_file_and_keep_file_order(tmp_path):
    first = write_registry(tmp_path, [valid_entry(key="b")], name="a.yaml")
    second = write_registry(tmp_path, [valid_entry(key="a")], name="b.yaml")

    entries = load_registry([first, second])

    assert [e.key for e in entries] == ["b", "a"]
    assert [e.registry_file for e in entries] == [str(first), str(second)]


def test_an_empty_models_list_is_valid(tmp_path):
    assert load_registry_file(write_text(tmp_path, "models: []\n")) == []


def test_entries_are_immutable(tmp_path):
    (entry,) = load_registry_file(write_registry(tmp_path, [valid_entry()]))
    with pytest.raises(ValueError):
        entry.key = "other"
    assert isinstance(entry, RegistryEntry)


# --- one test per validation error ---------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        pytest.param({"type": "vision"}, "type", "must be one of", id="unknown-type"),
        pytest.param({"repo_id": "no-slash"}, "repo_id", "must match", id="bad-repo-id"),
        pytest.param({"repo_id": "org/na me"}, "repo_id", "must match", id="repo-id-space"),
        pytest.param({"download_size": -5}, "download_size", "must be ≥ 0 (got -5)", id="neg-size"),
        pytest.param(
            {"parameter_count": -1}, "parameter_count", "must be ≥ 0", id="negative-count"
        ),
        pytest.param(
            {"memory_estimates": {"int8": -1}},
            "memory_estimates.int8",
            "must be ≥ 0",
            id="negative-memory-estimate",
        ),
        pytest.param(
            {"memory_estimates": {"int8": "1 GB"}},
            "memory_estimates.int8",
            "valid integer",
            id="memory-estimate-not-int",
        ),
        pytest.param(
            {"download_size": "133 MB"}, "download_size", "valid integer", id="size-not-int"
        ),
        pytest.param({"download_size": True}, "download_size", "valid integer", id="size-bool"),
        pytest.param(
            {"files": {"gguf": "a.gguf", "allow_patterns": ["*.json"]}},
            "files",
            "exactly one of 'gguf' and 'allow_patterns'",
            id="both-gguf-and-patterns",
        ),
        pytest.param(
            {"files": {}}, "files", "exactly one of 'gguf' and 'allow_patterns'", id="neither"
        ),
        pytest.param(
            {"files": {"allow_patterns": []}},
            "files",
            "exactly one of 'gguf' and 'allow_patterns'",
            id="empty-patterns",
        ),
        pytest.param(
            {"type": "llm", "files": {"gguf": "model.bin"}},
            "files.gguf",
            ".gguf filename",
            id="gguf-wrong-suffix",
        ),
        pytest.param(
            {"type": "llm", "files": {"gguf": "../model.gguf"}},
            "files.gguf",
            "inside the repo",
            id="gguf-outside-repo",
        ),
        pytest.param(
            {"type": "splade", "files": {"gguf": "model.gguf"}},
            "files",
            "needs type 'llm', 'embedding' or 'reranker'",
            id="gguf-on-splade",
        ),
        pytest.param(
            {"gguf_facts": GGUF_FACTS},
            "gguf_facts",
            "only an entry with a GGUF file has GGUF facts",
            id="facts-without-gguf",
        ),
        pytest.param(
            {"files": {"gguf": "m.gguf"}, "gguf_facts": {**GGUF_FACTS, "head_count_kv": 3}},
            "gguf_facts",
            "head_count_kv (3) must divide head_count (8)",
            id="facts-kv-heads",
        ),
        pytest.param(
            {"files": {"gguf": "m.gguf"}, "gguf_facts": {**GGUF_FACTS, "rope": 1}},
            "gguf_facts.rope",
            "is not a known field",
            id="facts-unknown-field",
        ),
        pytest.param(
            {"files": {"gguf": "m.gguf"}, "gguf_facts": {**GGUF_FACTS, "block_count": 0}},
            "gguf_facts.block_count",
            "must be ≥ 1",
            id="facts-zero-layers",
        ),
        pytest.param(
            {"sha256": {"model.safetensors": "ABC123"}},
            "sha256.model.safetensors",
            "must match",
            id="bad-sha256",
        ),
        pytest.param(
            {"sha256": {"model.safetensors": "A" * 64}},
            "sha256.model.safetensors",
            "must match",
            id="uppercase-sha256",
        ),
        pytest.param({"pooling": "sum"}, "pooling", "must be one of", id="unknown-pooling"),
        pytest.param({"gated": True}, "gated", "is not a known field", id="unknown-field"),
        pytest.param({"name": _DROP}, "name", "is required", id="missing-name"),
        pytest.param({"files": _DROP}, "files", "is required", id="missing-files"),
        pytest.param({"name": "   "}, "name", "must not be blank", id="blank-name"),
        pytest.param({"description": ""}, "description", "must not be blank", id="blank-desc"),
        pytest.param({"tags": ["English"]}, "tags[0]", "must match", id="uppercase-tag"),
        pytest.param({"revision": 1.0}, "revision", "valid string", id="revision-not-string"),
    ],
)
def test_invalid_entry_names_file_entry_and_field(tmp_path, changes, field, says):
    path = write_registry(tmp_path, [valid_entry(), valid_entry(key="broken", **changes)])

    err = load_error(path)

    assert_names(err, path, "'broken'", field)
    assert says in err.message


def test_negative_size_message_reads_as_documented(tmp_path):
    path = write_registry(tmp_path, [valid_entry(key="qwen2.5-7b-q4", download_size=-5)])
    err = load_error(path)
    assert err.message == (
        f"{path}: entry 'qwen2.5-7b-q4' field 'download_size': must be ≥ 0 (got -5)"
    )


def test_missing_key_names_the_entry_by_position(tmp_path):
    path = write_registry(tmp_path, [valid_entry(), valid_entry(key=_DROP)])
    err = load_error(path)
    assert_names(err, path, "#2", "key")
    assert "is required" in err.message


def test_bad_key_names_the_entry_by_position(tmp_path):
    path = write_registry(tmp_path, [valid_entry(key="Has Spaces")])
    err = load_error(path)
    assert_names(err, path, "#1", "key")
    assert "must match" in err.message


def test_duplicate_key_within_a_file(tmp_path):
    path = write_registry(tmp_path, [valid_entry(key="same"), valid_entry(key="same")])
    err = load_error(path)
    assert_names(err, path, "'same'", "key")
    assert "duplicate key (entry #1 has it too)" in err.message


def test_duplicate_key_across_two_files_names_both(tmp_path):
    first = write_registry(tmp_path, [valid_entry(key="same")], name="first.yaml")
    second = write_registry(tmp_path, [valid_entry(key="same")], name="second.yaml")

    with pytest.raises(RegistryError) as caught:
        load_registry([first, second])

    assert_names(caught.value, second, "'same'", "key")
    assert f"already defined in {first}" in caught.value.message


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = write_text(tmp_path, "models:\n  - key: a\n    name: [unclosed\n")
    err = load_error(path)
    assert err.file == str(path)
    assert err.message.startswith(f"{path}: invalid YAML")
    assert "line" in err.message


def test_repeated_yaml_field_in_one_entry_is_an_error(tmp_path):
    path = write_text(tmp_path, "models:\n  - key: a\n    key: b\n")
    err = load_error(path)
    assert err.file == str(path)
    assert "duplicate key 'key'" in err.message


def test_top_level_not_a_mapping(tmp_path):
    path = write_text(tmp_path, "- key: a\n")
    err = load_error(path)
    assert err.file == str(path) and err.field == "models"
    assert "top level must be a mapping with a 'models' list" in err.message


def test_empty_file(tmp_path):
    path = write_text(tmp_path, "")
    err = load_error(path)
    assert err.file == str(path) and err.field == "models"


def test_models_missing(tmp_path):
    path = write_text(tmp_path, "model:\n  - key: a\n")
    err = load_error(path)
    assert err.file == str(path) and err.field == "models"
    assert str(path) in err.message


def test_models_not_a_list(tmp_path):
    path = write_text(tmp_path, "models:\n  key: a\n")
    err = load_error(path)
    assert err.file == str(path) and err.field == "models"
    assert "must be a list of entries (got dict)" in err.message


def test_unknown_top_level_field(tmp_path):
    path = write_text(tmp_path, "version: 2\nmodels: []\n")
    err = load_error(path)
    assert err.file == str(path) and err.field == "version"
    assert "not a known top-level field" in err.message


def test_entry_not_a_mapping(tmp_path):
    path = write_registry(tmp_path, [valid_entry(), "just-a-string"])
    err = load_error(path)
    assert err.file == str(path) and err.entry == "#2"
    assert f"{path}: entry #2: must be a mapping (got str)" == err.message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    err = load_error(path)
    assert err.file == str(path)
    assert err.message == f"{path}: registry file not found"


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("models: []  # caf\xe9\n".encode("latin-1"))
    err = load_error(path)
    assert err.file == str(path) and "cannot read" in err.message


def test_relative_paths_are_shown_relative_to_the_current_directory(tmp_path, monkeypatch):
    write_registry(tmp_path, [valid_entry(download_size=-1)], name="rel.yaml")
    monkeypatch.chdir(tmp_path)
    err = load_error(Path("rel.yaml"))
    assert err.file == "rel.yaml"
    assert err.message.startswith("rel.yaml: entry 'tiny-embed' field 'download_size'")


# --- registry_paths ----------------------------------------------------------------------


def test_registry_paths_lists_shipped_files_sorted_then_extras(tmp_path, monkeypatch):
    shipped_dir = tmp_path / "registry"
    shipped_dir.mkdir()
    for name in ("splade.yaml", "embedding.yaml", "notes.txt", "llm.yaml"):
        (shipped_dir / name).write_text("models: []\n")
    monkeypatch.chdir(tmp_path)

    paths = registry_paths(
        registry_dir=shipped_dir,
        extra_files=["/etc/modelyard/team.yaml", "local/mine.yaml", "", "registry/llm.yaml"],
    )

    assert paths == [
        shipped_dir / "embedding.yaml",
        shipped_dir / "llm.yaml",
        shipped_dir / "splade.yaml",
        Path("/etc/modelyard/team.yaml"),
        tmp_path / "local" / "mine.yaml",
    ]


def test_registry_paths_with_a_missing_directory_gives_only_extras(tmp_path):
    assert registry_paths(registry_dir=tmp_path / "absent", extra_files=["/x.yaml"]) == [
        Path("/x.yaml")
    ]


def test_a_missing_extra_file_fails_the_load(tmp_path):
    paths = registry_paths(registry_dir=REGISTRY_DIR, extra_files=[str(tmp_path / "gone.yaml")])
    with pytest.raises(RegistryError) as caught:
        load_registry(paths)
    assert caught.value.file == str(tmp_path / "gone.yaml")
