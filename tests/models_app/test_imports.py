"""Import of local GGUF files and model folders: modes, format and path refusals, cancel."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from huggingface_hub import scan_cache_dir

from models_app.engine import operation_run
from models_app.errors import (
    AlreadyExists,
    FormatError,
    Incompatible,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from models_app.models import Installation, Model, Operation
from models_app.services.imports import import_start
from models_app.services.reconcile import store_reconcile
from tests.gemma import SHA256 as GEMMA_SHA256
from tests.gemma import gemma_file  # noqa: F401  (a fixture)
from tests.gguf_files import write_gguf

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def import_root(settings, tmp_path):
    root = tmp_path / "imports"
    root.mkdir()
    settings.IMPORT_ROOTS = [root]
    return root


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tiny_gguf(path: Path) -> Path:
    return write_gguf(path, metadata={"llama.context_length": 2048, "general.name": "tiny"})


def model_folder(path: Path) -> Path:
    (path / "1_Pooling").mkdir(parents=True)
    (path / "config.json").write_text('{"hidden_size": 32}')
    (path / "model.safetensors").write_bytes(os.urandom(300_000))
    (path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (path / ".DS_Store").write_bytes(b"hidden: left out")
    return path


def run_import(**kwargs) -> tuple[Operation, Model]:
    result = import_start(**kwargs)
    assert result.created, result.message
    state = operation_run(operation_id=result.operation.pk)
    op = Operation.objects.get(pk=result.operation.pk)
    assert state == "succeeded", (op.error_code, op.error_message)
    return op, Model.objects.get(pk=op.model_id)


def assert_installed(model: Model, hub: Path, digests: dict[str, str]) -> Installation:
    """The entry is installed, reconcile and huggingface_hub's scanner both find it."""
    installation = Installation.objects.get(model=model)
    assert installation.verified_at is not None
    assert sorted(installation.files) == sorted(digests)
    store_reconcile()  # a full rescan keeps it installed
    assert Installation.objects.filter(model=model, commit_hash=installation.commit_hash).exists()
    repos = {r.repo_id: r for r in scan_cache_dir(hub).repos}
    (revision,) = repos[model.repo_id].revisions
    assert revision.commit_hash == installation.commit_hash and "main" in revision.refs
    snapshot = hub / f"models--local--{model.key}" / "snapshots" / installation.commit_hash
    for name, digest in digests.items():
        link = snapshot / name
        assert os.readlink(link).endswith(f"blobs/{digest}")
        assert sha256_of(link) == digest
    assert model.sha256 == digests
    return installation


# --- the Gemma GGUF in each mode ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink", "move"])
def test_import_gemma_in_each_mode(mode, gemma_file, import_root, isolated_store):  # noqa: F811
    source = import_root / "gemma.gguf"
    os.link(gemma_file, source)  # same filesystem: no 253 MB copy to set the test up
    op, model = run_import(path=str(source), type="llm", name="Gemma 3 270M", mode=mode)
    assert model.source == "local" and model.repo_id == "local/gemma-3-270m"
    assert model.gguf_file == "gemma.gguf" and model.revision == "main"
    assert_installed(model, isolated_store, {"gemma.gguf": GEMMA_SHA256})
    assert op.bytes_done == op.bytes_total == gemma_file.stat().st_size
    blob = isolated_store / "models--local--gemma-3-270m" / "blobs" / GEMMA_SHA256
    if mode == "symlink":
        assert blob.is_symlink() and os.readlink(blob) == str(source)
    else:
        assert blob.is_file() and not blob.is_symlink()
    if mode in ("hardlink", "move"):
        assert blob.stat().st_ino == gemma_file.stat().st_ino
    assert source.exists() == (mode != "move")
    assert model.gguf_facts["architecture"] == "gemma3" and model.context_window
    assert model.gguf_facts["commit_hash"] == op.commit_hash  # read again from the store
    assert not list(blob.parent.glob("*.incomplete"))


def test_import_tiny_gguf_copy_hashes_what_it_copies(import_root, isolated_store):
    source = tiny_gguf(import_root / "tiny weird[1].bin")
    op, model = run_import(path="tiny weird[1].bin", type="embedding", name="Tiny")  # relative
    assert model.key == "tiny" and model.gguf_file == "tiny_weird_1_.bin.gguf"
    assert_installed(model, isolated_store, {model.gguf_file: sha256_of(source)})
    assert op.result["source"] == "tiny weird[1].bin" and op.result["mode"] == "copy"
    assert model.gguf_facts.get("context_length") == 2048


def test_import_folder(import_root, isolated_store):
    folder = model_folder(import_root / "my-embedder")
    op, model = run_import(path=str(folder), type="embedding", name="My embedder", key="mine")
    digests = {
        name: sha256_of(folder / name)
        for name in ("config.json", "model.safetensors", "1_Pooling/config.json")
    }
    assert model.allow_patterns == ["*"] and not model.gguf_file
    assert_installed(model, isolated_store, digests)
    assert op.result["files"] == 3


def test_move_of_a_folder_removes_it(import_root, isolated_store):
    folder = model_folder(import_root / "moving")
    (folder / ".DS_Store").unlink()
    run_import(path=str(folder), type="reranker", name="Moving", mode="move")
    assert not folder.exists()


def test_commit_is_deterministic(import_root, isolated_store):
    source = tiny_gguf(import_root / "same.gguf")
    op1, _ = run_import(path=str(source), type="llm", name="One")
    op2, _ = run_import(path=str(source), type="llm", name="Two", mode="symlink")
    assert op1.commit_hash == op2.commit_hash and len(op1.commit_hash) == 40


# --- refusals ----------------------------------------------------------------------------


def test_not_gguf(import_root):
    (import_root / "notes.gguf").write_text("hello, not a model")
    with pytest.raises(FormatError, match=r"'notes.gguf' is not a GGUF file"):
        import_start(path=str(import_root / "notes.gguf"), type="llm", name="x")
    assert not Model.objects.exists()


def test_truncated_header(import_root, tmp_path):
    whole = tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    (import_root / "cut.gguf").write_bytes(whole[:40])
    with pytest.raises(FormatError) as caught:
        import_start(path=str(import_root / "cut.gguf"), type="llm", name="x")
    assert caught.value.code == "ERR_FORMAT" and str(tmp_path) not in caught.value.message


def test_folder_without_config(import_root):
    folder = import_root / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    with pytest.raises(FormatError, match=r"no config.json"):
        import_start(path=str(folder), type="embedding", name="x")


def test_folder_without_weights(import_root):
    folder = import_root / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(FormatError, match=r"no weights"):
        import_start(path=str(folder), type="embedding", name="x")


def test_type_must_fit_the_format(import_root):
    gguf = tiny_gguf(import_root / "t.gguf")
    with pytest.raises(Incompatible):
        import_start(path=str(gguf), type="splade", name="x")
    folder = model_folder(import_root / "f")
    with pytest.raises(Incompatible):
        import_start(path=str(folder), type="llm", name="x")


def test_dotdot_refused(import_root, tmp_path):
    tiny_gguf(tmp_path / "outside.gguf")
    with pytest.raises(InvalidInput, match=r"'\.\.'"):
        import_start(path=str(import_root / ".." / "outside.gguf"), type="llm", name="x")


def test_symlink_out_of_the_root_refused(import_root, tmp_path):
    outside = tiny_gguf(tmp_path / "secret.gguf")
    (import_root / "innocent.gguf").symlink_to(outside)
    with pytest.raises(PermissionDenied) as caught:
        import_start(path=str(import_root / "innocent.gguf"), type="llm", name="x")
    assert "'innocent.gguf'" in caught.value.message and str(tmp_path) not in caught.value.message


def test_symlink_out_of_the_root_inside_a_folder_refused(import_root, tmp_path):
    folder = model_folder(import_root / "folder")
    (folder / "extra.bin").symlink_to(tiny_gguf(tmp_path / "secret.gguf"))
    with pytest.raises(PermissionDenied, match=r"folder/extra.bin"):
        import_start(path=str(folder), type="embedding", name="x")


def test_fifo_refused(import_root):
    os.mkfifo(import_root / "pipe.gguf")
    with pytest.raises(InvalidInput, match=r"'pipe.gguf' is a FIFO"):
        import_start(path=str(import_root / "pipe.gguf"), type="llm", name="x")


def test_fifo_inside_a_folder_refused(import_root):
    folder = model_folder(import_root / "folder")
    os.mkfifo(folder / "pipe")
    with pytest.raises(InvalidInput, match=r"is a FIFO"):
        import_start(path=str(folder), type="embedding", name="x")


def test_device_file_refused(settings):
    settings.IMPORT_ROOTS = [Path("/dev")]
    with pytest.raises(InvalidInput, match=r"'null' is a device file"):
        import_start(path="/dev/null", type="llm", name="x")


def test_outside_every_root_refused(import_root, tmp_path):
    outside = tiny_gguf(tmp_path / "elsewhere.gguf")
    with pytest.raises(PermissionDenied) as caught:
        import_start(path=str(outside), type="llm", name="x")
    assert str(tmp_path) not in caught.value.message and "IMPORT_ROOTS" in caught.value.message


def test_missing_path(import_root):
    with pytest.raises(NotFound, match=r"'nothing.gguf'"):
        import_start(path=str(import_root / "nothing.gguf"), type="llm", name="x")


def test_import_off_without_roots(settings, tmp_path):
    settings.IMPORT_ROOTS = []
    with pytest.raises(PermissionDenied, match=r"IMPORT_ROOTS"):
        import_start(path=str(tiny_gguf(tmp_path / "t.gguf")), type="llm", name="x")


def test_key_taken(import_root):
    source = tiny_gguf(import_root / "t.gguf")
    from tests.factories import ModelFactory

    ModelFactory(key="taken")
    with pytest.raises(AlreadyExists):
        import_start(path=str(source), type="llm", name="Taken")
    run_import(path=str(source), type="llm", name="Mine")
    with pytest.raises(AlreadyExists, match=r"installed already"):
        import_start(path=str(source), type="llm", name="Mine")


def test_hardlink_across_filesystems_refused(settings):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(settings.MODELS_DIR.parent).st_dev:
        pytest.skip("no second filesystem to link across")
    root = shm / f"modelyard-import-{os.getpid()}"
    root.mkdir(exist_ok=True)
    try:
        settings.IMPORT_ROOTS = [root]
        source = tiny_gguf(root / "t.gguf")
        with pytest.raises(InvalidInput, match=r"hardlink import needs 't.gguf'"):
            import_start(path=str(source), type="llm", name="x", mode="hardlink")
        # move across filesystems copies, then removes the source
        _, model = run_import(path=str(source), type="llm", name="Moved", mode="move")
        assert not source.exists() and Installation.objects.filter(model=model).exists()
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


# --- cancel and failure ------------------------------------------------------------------


def test_cancel_leaves_no_partial(import_root, isolated_store, settings, gemma_file, monkeypatch):  # noqa: F811
    """A cancel between chunks: no blob, no partial, no repo folder; the entry not installed."""
    from models_app.services import operation_cancel
    from models_app.store import local

    settings.OPERATION_PROGRESS_INTERVAL = 0
    source = import_root / "gemma.gguf"
    os.link(gemma_file, source)
    result = import_start(path=str(source), type="llm", name="Cancelled")
    op = result.operation
    chunks = threading.Event()
    original = local._read_hashed

    def read_hashed(path, on_bytes, into=None):
        def counting(n):
            on_bytes(n)
            if not chunks.is_set():
                chunks.set()
                operation_cancel(operation=Operation.objects.get(pk=op.pk))

        return original(path, counting, into)

    # The cancel lands after the first chunk, as a user's click would during the copy.
    monkeypatch.setattr(local, "_read_hashed", read_hashed)
    assert operation_run(operation_id=op.pk) == "cancelled"
    monkeypatch.undo()
    op.refresh_from_db()
    assert op.error_code == "ERR_CANCELLED" and 0 < op.bytes_done < gemma_file.stat().st_size
    assert not (isolated_store / "models--local--cancelled").exists()
    assert not Installation.objects.filter(model=op.model).exists()
    assert source.exists()
    # The entry stays, not installed; a retry imports it.
    from models_app.services import operation_retry

    operation_retry(operation=op)
    assert operation_run(operation_id=op.pk) == "succeeded"
    assert Installation.objects.filter(model=op.model).exists()


def test_source_gone_before_the_run(import_root, isolated_store):
    source = tiny_gguf(import_root / "t.gguf")
    result = import_start(path=str(source), type="llm", name="Gone")
    source.unlink()
    assert operation_run(operation_id=result.operation.pk) == "failed"
    op = Operation.objects.get(pk=result.operation.pk)
    assert op.error_code == "ERR_NOT_FOUND" and "'t.gguf'" in op.error_message
    assert not (isolated_store / "models--local--gone").exists()
    assert Model.objects.filter(key="gone", installation__isnull=True).exists()


# --- the API and the command -------------------------------------------------------------


def test_api_import(superuser_client, import_root, isolated_store):
    source = tiny_gguf(import_root / "api.gguf")
    response = superuser_client.post(
        f"{API}/models/import",
        {"path": str(source), "type": "llm", "name": "Via API", "mode": "hardlink"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["operation"]["kind"] == "import"
    assert body["operation"]["model"] == "via-api"
    assert operation_run(operation_id=body["operation"]["id"]) == "succeeded"
    detail = superuser_client.get(f"{API}/models/via-api").json()
    assert detail["source"] == "local" and detail["repo_id"] == "local/via-api"


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"path": "../x.gguf"}, 422, "ERR_INVALID"),
        ({"path": "/etc/hostname"}, 403, "ERR_FORBIDDEN"),
        ({"path": "nothing.gguf"}, 404, "ERR_NOT_FOUND"),
        ({"path": "text.gguf"}, 409, "ERR_FORMAT"),
        ({"path": "api.gguf", "mode": "teleport"}, 422, "ERR_INVALID"),
        ({"path": "api.gguf", "extra": 1}, 422, "ERR_INVALID"),
    ],
)
def test_api_import_refusals(superuser_client, import_root, body, status, code):
    tiny_gguf(import_root / "api.gguf")
    (import_root / "text.gguf").write_text("text")
    payload = {"type": "llm", "name": "Refused", **body}
    response = superuser_client.post(
        f"{API}/models/import", payload, content_type="application/json"
    )
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code
    assert "/etc" not in response.json()["message"]
    assert not Model.objects.exists()


def test_api_import_off(superuser_client, settings):
    settings.IMPORT_ROOTS = []
    response = superuser_client.post(
        f"{API}/models/import",
        {"path": "/x.gguf", "type": "llm", "name": "Off"},
        content_type="application/json",
    )
    assert response.status_code == 403 and response.json()["code"] == "ERR_FORBIDDEN"
    assert "IMPORT_ROOTS" in response.json()["message"]


def test_api_import_needs_a_superuser(user_client, import_root):
    response = user_client.post(
        f"{API}/models/import",
        {"path": "x", "type": "llm", "name": "x"},
        content_type="application/json",
    )
    assert response.status_code == 403


def test_command_import(import_root, isolated_store, capsys):
    source = tiny_gguf(import_root / "cli.gguf")
    call_command("models", "import", str(source), "--type", "llm", "--mode", "symlink")
    out = capsys.readouterr().out
    assert "Import #" in out and "succeeded" in out and "cli " in out
    model = Model.objects.get(key="cli")
    assert_installed(model, isolated_store, {"cli.gguf": sha256_of(source)})


def test_command_import_refusal_exits_2(import_root, capsys):
    (import_root / "text.gguf").write_text("text")
    with pytest.raises(SystemExit) as exited:
        call_command("models", "import", str(import_root / "text.gguf"), "--type", "llm")
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("ERR_FORMAT:")
