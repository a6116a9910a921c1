"""A local entry (an import) that is not installed can be removed: API, page, admin."""

import shutil

import pytest
from django.urls import reverse

from models_app.engine import operation_run
from models_app.errors import InvalidState
from models_app.models import Event, Installation, Model, Operation
from models_app.services.custom_models import custom_model_remove
from models_app.services.imports import import_start
from models_app.services.reconcile import store_reconcile
from tests.models_app.test_imports import sha256_of, tiny_gguf

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def import_root(settings, tmp_path):
    root = tmp_path / "imports"
    root.mkdir()
    settings.IMPORT_ROOTS = [root]
    return root


def failed_import(import_root, name="Gone") -> Model:
    source = tiny_gguf(import_root / "t.gguf")
    result = import_start(path=str(source), type="llm", name=name)
    source.unlink()  # the import fails: its source is gone
    assert operation_run(operation_id=result.operation.pk) == "failed"
    return Model.objects.get(pk=result.operation.model_id)


def installed_import(import_root, mode="copy") -> Model:
    source = tiny_gguf(import_root / "kept.gguf")
    result = import_start(path=str(source), type="llm", name="Kept", mode=mode)
    assert operation_run(operation_id=result.operation.pk) == "succeeded"
    return Model.objects.get(pk=result.operation.model_id)


def test_api_removes_a_failed_import(superuser_client, import_root, isolated_store):
    model = failed_import(import_root)
    response = superuser_client.delete(f"{API}/models/custom/{model.key}")
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "model": "gone", "removed": True, "bytes_freed": 0, "message": "Removed gone.",
    }  # fmt: skip
    assert not Model.objects.filter(key="gone").exists()
    assert not Operation.objects.filter(kind="import").exists()  # it belonged to the entry
    removed = Event.objects.get(kind="removed")
    assert removed.message == "Local import entry gone removed." and removed.data["key"] == "gone"
    # The name can be imported again, as a new entry.
    again = import_start(path=str(tiny_gguf(import_root / "t.gguf")), type="llm", name="Gone")
    assert again.created and again.operation.model.key == "gone"


def test_an_installed_local_entry_is_refused_unless_its_files_go(
    superuser_client, import_root, isolated_store
):
    model = installed_import(import_root, mode="symlink")
    url = f"{API}/models/custom/{model.key}"
    response = superuser_client.delete(url)
    assert response.status_code == 409 and response.json()["code"] == "ERR_INVALID_STATE"
    assert Installation.objects.filter(model=model).exists()

    source = import_root / "kept.gguf"
    digest = sha256_of(source)
    response = superuser_client.delete(url + "?delete_files=true")
    assert response.status_code == 200, response.json()
    assert not Model.objects.filter(pk=model.pk).exists()
    assert not list((isolated_store / "models--local--kept").rglob("*.gguf"))
    assert sha256_of(source) == digest  # a symlink import's delete removes only the links


def test_a_local_entry_whose_files_are_gone_can_be_removed(import_root, isolated_store):
    model = installed_import(import_root)
    shutil.rmtree(isolated_store / "models--local--kept")
    store_reconcile()
    assert not Installation.objects.filter(model=model).exists()
    assert custom_model_remove(model=model)["removed"]
    assert not Model.objects.exists()


def test_a_curated_entry_is_still_refused(db):
    from tests.factories import ModelFactory

    with pytest.raises(InvalidState, match="only custom and local entries"):
        custom_model_remove(model=ModelFactory(source="curated"))


def test_the_card_offers_remove_entry_for_a_local_entry(
    superuser_client, import_root, isolated_store
):
    model = failed_import(import_root)
    card = superuser_client.get(reverse("models:card", args=[model.key])).content.decode()
    assert 'data-testid="retry"' in card and 'data-testid="remove-custom"' in card

    Operation.objects.filter(model=model).delete()  # no failure to show: files just gone
    card = superuser_client.get(reverse("models:card", args=[model.key])).content.decode()
    assert 'data-testid="remove-custom"' in card and 'data-testid="local-not-installed"' in card
    assert 'data-testid="download"' not in card  # a local entry cannot be downloaded

    response = superuser_client.post(
        reverse("models:custom_remove", args=[model.key]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and response.content == b""
    assert "Removed the entry Gone." in response["HX-Trigger"]
    assert not Model.objects.filter(pk=model.pk).exists()


def test_an_installed_local_card_has_no_remove_entry(superuser_client, import_root, isolated_store):
    model = installed_import(import_root)
    card = superuser_client.get(reverse("models:card", args=[model.key])).content.decode()
    assert 'data-testid="remove-custom"' not in card and 'data-testid="delete"' in card
    assert 'data-testid="update-check"' not in card  # no Hub to ask


def test_the_admin_deletes_a_local_entry_through_the_service(
    superuser_client, import_root, isolated_store
):
    model = failed_import(import_root)
    response = superuser_client.post(f"/admin/models_app/model/{model.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Model.objects.filter(pk=model.pk).exists()
    assert Event.objects.filter(kind="removed", data__key="gone").exists()
    installed = installed_import(import_root)
    url = f"/admin/models_app/model/{installed.pk}/delete/"
    assert superuser_client.post(url, {"post": "yes"}).status_code == 403
