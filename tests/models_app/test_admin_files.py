"""The admin's Export… action and Import a local model form start the services' operations."""

import pytest
from django.contrib.messages import get_messages

from models_app.engine import operation_run
from models_app.models import Model, Operation
from models_app.services.reconcile import store_reconcile
from tests.factories import ModelFactory
from tests.hub_cache import write_snapshot
from tests.models_app.test_exports import COMMIT, FILES, check_manifest
from tests.models_app.test_imports import tiny_gguf

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/models_app/model/"
IMPORT = "/admin/models_app/model/import/"


@pytest.fixture
def import_root(settings, tmp_path):
    root = tmp_path / "imports"
    root.mkdir()
    settings.IMPORT_ROOTS = [root]
    return root


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
    store_reconcile()
    return model


def export_action(client, model, **fields):
    data = {"action": "export_selected", "_selected_action": [model.pk], **fields}
    return client.post(CHANGELIST, data, follow=bool(fields))


def said(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_export_asks_dest_and_mode_then_starts_the_export(superuser_client, installed, export_root):
    form = export_action(superuser_client, installed)
    html = form.content.decode()
    assert form.status_code == 200 and 'data-testid="files-form"' in html
    assert 'name="dest"' in html and 'value="hardlink"' in html
    assert 'name="action" value="export_selected"' in html
    assert not Operation.objects.exists()

    response = export_action(superuser_client, installed, export="yes", dest="out", mode="copy")
    assert response.redirect_chain[-1][0].startswith(CHANGELIST)
    op = Operation.objects.get(kind="export")
    assert op.model == installed and op.plan["mode"] == "copy"
    assert any(installed.name in text for text in said(response))
    assert operation_run(operation_id=op.pk) == "succeeded"
    check_manifest(export_root / "out")


def test_export_refusal_is_a_message_above_the_form_it_keeps(
    superuser_client, installed, export_root, tmp_path
):
    (export_root / "taken").mkdir()
    response = export_action(superuser_client, installed, export="yes", dest="taken", mode="copy")
    html = response.content.decode()
    assert response.status_code == 200 and 'data-testid="files-form"' in html
    assert "Cannot export embed: ERR_ALREADY_EXISTS" in html and 'value="taken"' in html
    outside = export_action(
        superuser_client, installed, export="yes", dest=str(tmp_path / "x"), mode="copy"
    ).content.decode()
    assert "Cannot export embed: ERR_" in outside and str(tmp_path) not in outside.split("<form")[0]
    assert not Operation.objects.exists()


def test_export_not_installed_and_more_than_one_selected(superuser_client, export_root):
    a, b = ModelFactory(key="a"), ModelFactory(key="b")
    response = superuser_client.post(
        CHANGELIST, {"action": "export_selected", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    assert "Select exactly one installed model to export." in said(response)
    response = export_action(superuser_client, a, export="yes", dest="x", mode="copy")
    assert "Cannot export a: ERR_NOT_INSTALLED" in response.content.decode()
    assert not Operation.objects.exists()


def test_import_form_is_linked_and_starts_the_import(
    superuser_client, superuser, import_root, isolated_store
):
    changelist = superuser_client.get(CHANGELIST).content.decode()
    assert f'href="{IMPORT}"' in changelist
    form = superuser_client.get(IMPORT)
    assert form.status_code == 200 and 'name="path"' in form.content.decode()

    source = tiny_gguf(import_root / "tiny-chat.gguf")
    response = superuser_client.post(
        IMPORT, {"path": str(source), "type": "llm", "name": "", "key": "", "mode": "hardlink"}
    )
    assert response.status_code == 302 and response["Location"] == CHANGELIST
    model = Model.objects.get(key="tiny-chat")
    assert (model.source, model.added_by, model.name) == ("local", superuser, "tiny-chat")
    op = Operation.objects.get(kind="import", model=model)
    assert operation_run(operation_id=op.pk) == "succeeded"
    assert model.installation.files == ["tiny-chat.gguf"]


def test_import_refusal_is_a_message_above_the_form_it_keeps(superuser_client, import_root):
    (import_root / "notes.gguf").write_text("not a GGUF")
    data = {"path": "notes.gguf", "type": "llm", "name": "Notes", "key": "", "mode": "copy"}
    response = superuser_client.post(IMPORT, data)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Cannot import Notes: ERR_FORMAT" in html and 'value="notes.gguf"' in html
    response = superuser_client.post(IMPORT, {**data, "path": "../../etc/passwd"})
    assert "Cannot import Notes: ERR_" in response.content.decode()
    assert not Model.objects.exists() and not Operation.objects.exists()


def test_import_and_export_are_for_superusers_only(user_client, superuser, installed):
    from django.contrib.auth.models import Permission

    superuser.is_superuser = False  # a staff user with every permission of Model
    superuser.save()
    superuser.user_permissions.set(Permission.objects.filter(content_type__model="model"))
    from django.test import Client

    staff = Client()
    staff.force_login(superuser)
    assert staff.get(IMPORT).status_code == 403
    assert 'data-testid="admin-import"' not in staff.get(CHANGELIST).content.decode()
    response = export_action(staff, installed)
    assert response.status_code == 302 and not Operation.objects.exists()
    assert user_client.get(IMPORT).status_code == 403
