"""Export of an installed model: files and manifest, modes, refusals, cancel, API, command, page."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from django.core.management import call_command

from models_app.engine import operation_run
from models_app.errors import (
    AlreadyExists,
    InvalidInput,
    NotInstalled,
    PermissionDenied,
)
from models_app.models import Operation
from models_app.services.exports import export_start
from models_app.services.reconcile import store_reconcile
from tests.factories import ModelFactory
from tests.hub_cache import write_snapshot

pytestmark = pytest.mark.django_db

API = "/api/v1"
COMMIT = "c" * 40
FILES = {
    "config.json": b'{"hidden_size": 32}',
    "model.safetensors": b"W" * 200_000,
    "1_Pooling/config.json": b'{"pooling_mode_cls_token": true}',
}


@pytest.fixture
def export_root(settings, tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    settings.EXPORT_ROOTS = [root]
    return root


@pytest.fixture
def installed(isolated_store):
    model = ModelFactory(
        key="embed", repo_id="acme/embed", allow_patterns=["*.json", "*.safetensors"]
    )
    write_snapshot(isolated_store, "acme/embed", COMMIT, FILES)
    assert store_reconcile().installed == ["embed"]
    return model


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_export(model, dest, mode="copy") -> Operation:
    result = export_start(model=model, dest=str(dest), mode=mode)
    assert result.created
    state = operation_run(operation_id=result.operation.pk)
    op = Operation.objects.get(pk=result.operation.pk)
    assert state == "succeeded", (op.error_code, op.error_message)
    return op


def check_manifest(dest: Path) -> dict:
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["repo"] == "acme/embed" and manifest["commit"] == COMMIT
    assert manifest["revision"] == "main" and manifest["model"] == "embed"
    assert sorted(f["path"] for f in manifest["files"]) == sorted(FILES)
    for row in manifest["files"]:
        path = dest / row["path"]
        assert sha256_of(path) == row["sha256"] == hashlib.sha256(FILES[row["path"]]).hexdigest()
        assert path.stat().st_size == row["size"]
    return manifest


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_export_in_each_mode(mode, installed, export_root, isolated_store):
    dest = export_root / "out" / "embed"  # parents are made
    op = run_export(installed, dest, mode)
    check_manifest(dest)
    weights = dest / "model.safetensors"
    blob = isolated_store / "models--acme--embed" / "blobs" / sha256_of(weights)
    if mode == "copy":
        assert not weights.is_symlink() and weights.stat().st_ino != blob.stat().st_ino
    elif mode == "hardlink":
        assert weights.stat().st_ino == blob.stat().st_ino
    else:
        assert weights.is_symlink() and Path(os.readlink(weights)) == blob.resolve()
    assert op.result["dest"] == "out/embed" and op.result["files"] == 3
    assert op.bytes_done == op.bytes_total == sum(len(b) for b in FILES.values())
    assert [p.name for p in (export_root / "out").iterdir()] == ["embed"]  # no temporary left


def test_export_relative_dest(installed, export_root):
    run_export(installed, "relative-name")
    check_manifest(export_root / "relative-name")


def test_dest_exists_refused(installed, export_root):
    (export_root / "taken").mkdir()
    with pytest.raises(AlreadyExists, match=r"'taken' already exists"):
        export_start(model=installed, dest=str(export_root / "taken"))
    assert not Operation.objects.exists()


def test_dest_appearing_after_the_start_fails_and_leaves_it(installed, export_root):
    result = export_start(model=installed, dest=str(export_root / "late"))
    (export_root / "late").mkdir()
    (export_root / "late" / "mine.txt").write_text("not overwritten")
    assert operation_run(operation_id=result.operation.pk) == "failed"
    op = Operation.objects.get(pk=result.operation.pk)
    assert op.error_code == "ERR_ALREADY_EXISTS"
    assert [p.name for p in (export_root / "late").iterdir()] == ["mine.txt"]
    assert [p.name for p in export_root.iterdir()] == ["late"]


def test_dest_outside_export_roots_refused(installed, export_root, tmp_path):
    with pytest.raises(PermissionDenied) as caught:
        export_start(model=installed, dest=str(tmp_path / "elsewhere"))
    assert str(tmp_path) not in caught.value.message
    with pytest.raises(InvalidInput):
        export_start(model=installed, dest=str(export_root / ".." / "escape"))
    (export_root / "link").symlink_to(tmp_path)
    with pytest.raises(PermissionDenied, match="symlink"):
        export_start(model=installed, dest=str(export_root / "link" / "escape"))


def test_export_off_without_roots(installed, settings):
    settings.EXPORT_ROOTS = []
    with pytest.raises(PermissionDenied, match="EXPORT_ROOTS"):
        export_start(model=installed, dest="/tmp/x")


def test_not_installed_refused(export_root):
    model = ModelFactory(key="absent")
    with pytest.raises(NotInstalled):
        export_start(model=model, dest=str(export_root / "absent"))


def test_bad_mode(installed, export_root):
    with pytest.raises(InvalidInput):
        export_start(model=installed, dest=str(export_root / "x"), mode="move")


def test_damaged_blob_fails_with_checksum_and_leaves_nothing(
    installed, export_root, isolated_store
):
    digest = hashlib.sha256(FILES["model.safetensors"]).hexdigest()
    blob = isolated_store / "models--acme--embed" / "blobs" / digest
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = export_start(model=installed, dest=str(export_root / "damaged"))
    assert operation_run(operation_id=result.operation.pk) == "failed"
    assert Operation.objects.get(pk=result.operation.pk).error_code == "ERR_CHECKSUM"
    assert list(export_root.iterdir()) == []


def test_cancel_leaves_nothing(installed, export_root, settings, monkeypatch):
    from models_app.services import operation_cancel
    from models_app.store import local

    settings.OPERATION_PROGRESS_INTERVAL = 0
    result = export_start(model=installed, dest=str(export_root / "cancelled"))
    original = local._read_hashed

    def read_hashed(path, on_bytes, into=None):
        def cancelling(n):
            operation_cancel(operation=Operation.objects.get(pk=result.operation.pk))
            on_bytes(n)

        return original(path, cancelling, into)

    monkeypatch.setattr(local, "_read_hashed", read_hashed)
    assert operation_run(operation_id=result.operation.pk) == "cancelled"
    assert list(export_root.iterdir()) == []


def test_import_then_export_round_trip(installed, export_root, settings, isolated_store):
    """An export imported again is the same model: same files, same sha256s."""
    from models_app.models import Installation, Model
    from models_app.services.imports import import_start

    run_export(installed, export_root / "trip")
    settings.IMPORT_ROOTS = [export_root]
    (export_root / "trip" / "manifest.json").unlink()
    result = import_start(path="trip", type="embedding", name="Trip")
    assert operation_run(operation_id=result.operation.pk) == "succeeded"
    model = Model.objects.get(key="trip")
    assert Installation.objects.get(model=model).files == sorted(FILES)


# --- the API, the command, the page ------------------------------------------------------


def test_api_export(superuser_client, installed, export_root):
    response = superuser_client.post(
        f"{API}/models/embed/export",
        {"dest": "api-out", "mode": "hardlink"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.json()
    op = response.json()["operation"]
    assert op["kind"] == "export" and op["model"] == "embed"
    assert operation_run(operation_id=op["id"]) == "succeeded"
    check_manifest(export_root / "api-out")
    result = superuser_client.get(f"{API}/operations/{op['id']}").json()["result"]
    assert result["dest"] == "api-out" and str(export_root) not in json.dumps(result)


@pytest.mark.parametrize(
    "key, body, status, code",
    [
        ("embed", {"dest": "taken"}, 409, "ERR_ALREADY_EXISTS"),
        ("embed", {"dest": "/etc/x"}, 403, "ERR_FORBIDDEN"),
        ("embed", {"dest": "a/../b"}, 422, "ERR_INVALID"),
        ("embed", {"dest": "x", "mode": "move"}, 422, "ERR_INVALID"),
        ("absent", {"dest": "x"}, 409, "ERR_NOT_INSTALLED"),
        ("nope", {"dest": "x"}, 404, "ERR_NOT_FOUND"),
    ],
)
def test_api_export_refusals(superuser_client, installed, export_root, key, body, status, code):
    ModelFactory(key="absent")
    (export_root / "taken").mkdir()
    response = superuser_client.post(
        f"{API}/models/{key}/export", body, content_type="application/json"
    )
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code


def test_second_export_while_one_runs_returns_it(installed, export_root):
    first = export_start(model=installed, dest=str(export_root / "one"))
    second = export_start(model=installed, dest=str(export_root / "two"))
    assert not second.created and second.operation.pk == first.operation.pk


def test_command_export(installed, export_root, capsys):
    call_command("models", "export", "embed", str(export_root / "cli"), "--mode", "symlink")
    assert "Export #" in capsys.readouterr().out
    check_manifest(export_root / "cli")
    with pytest.raises(SystemExit) as exited:
        call_command("models", "export", "embed", str(export_root / "cli"))
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("ERR_ALREADY_EXISTS:")


def test_page_export_action(superuser_client, installed, export_root):
    page = superuser_client.get("/settings/models/?type=embedding").content.decode()
    assert 'data-testid="export"' in page
    dialog = superuser_client.get("/settings/models/embed/export/", HTTP_HX_REQUEST="true")
    assert dialog.status_code == 200 and b'data-testid="export-dialog"' in dialog.content
    response = superuser_client.post(
        "/settings/models/embed/export/", {"dest": "page-out"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and b'data-model="embed"' in response.content
    op = Operation.objects.get(kind="export")
    assert operation_run(operation_id=op.pk) == "succeeded"
    refused = superuser_client.post(
        "/settings/models/embed/export/", {"dest": "page-out"}, HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 409 and refused["X-Modelyard-Error"] == "ERR_ALREADY_EXISTS"
    assert b"already exists" in refused.content and b'value="page-out"' in refused.content


def test_page_import_dialog(superuser_client, settings, tmp_path):
    from tests.gguf_files import write_gguf

    root = tmp_path / "imports"
    root.mkdir()
    settings.IMPORT_ROOTS = [root]
    write_gguf(root / "page.gguf")
    page = superuser_client.get("/settings/models/").content.decode()
    assert 'data-testid="import"' in page
    dialog = superuser_client.get("/settings/models/import/", HTTP_HX_REQUEST="true")
    assert b'data-testid="import-dialog"' in dialog.content
    refused = superuser_client.post(
        "/settings/models/import/",
        {"path": "nothing.gguf", "name": "Page", "type": "llm", "mode": "copy"},
        HTTP_HX_REQUEST="true",
    )
    assert refused.status_code == 404 and b"ERR_NOT_FOUND" in refused.content
    assert b'value="nothing.gguf"' in refused.content  # what was typed stays
    response = superuser_client.post(
        "/settings/models/import/",
        {"path": "page.gguf", "name": "Page", "type": "llm", "mode": "copy"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200 and "type=llm" in response["HX-Redirect"]
    op = Operation.objects.get(kind="import")
    assert operation_run(operation_id=op.pk) == "succeeded"
    page = superuser_client.get("/settings/models/?type=llm").content.decode()
    assert 'data-model="page"' in page and "Export…" in page
    # no JavaScript: the dialog is a page of its own
    plain = superuser_client.get("/settings/models/import/")
    assert plain.status_code == 200 and b"import-dialog" in plain.content


def test_page_needs_a_superuser(user_client, installed):
    assert user_client.get("/settings/models/import/").status_code == 403
    assert user_client.post("/settings/models/embed/export/", {"dest": "x"}).status_code == 403
