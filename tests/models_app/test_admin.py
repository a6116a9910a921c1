"""The admin: superuser-only pages, list columns, actions through the services."""

import pytest
from django.test import Client
from django.urls import reverse

from models_app.models import ActiveModel, ApiToken, Event, Installation
from tests.factories import (
    CollectionFactory,
    InstallationFactory,
    ModelFactory,
    OperationFactory,
    UserFactory,
)
from tests.hub_cache import write_snapshot

pytestmark = pytest.mark.django_db

ADMIN_MODELS = [
    "models_app.model",
    "models_app.installation",
    "models_app.operation",
    "models_app.event",
    "models_app.activemodel",
    "models_app.storescan",
    "models_app.apitoken",
    "collections_app.collection",
    "collections_app.userpreference",
    "collections_app.llmconfig",
]


@pytest.fixture
def populated():
    model = ModelFactory(key="bge-small", name="BGE small", type="embedding")
    InstallationFactory(model=model)
    CollectionFactory(embedding_model=model)
    OperationFactory(model=model, state="running", bytes_done=50, bytes_total=200)
    Event.objects.create(kind="started", message="Download started", model=model)
    return model


@pytest.mark.parametrize("label", ADMIN_MODELS)
def test_changelists_load_for_superusers(superuser_client, populated, label):
    app, name = label.split(".")
    response = superuser_client.get(reverse(f"admin:{app}_{name}_changelist"))
    assert response.status_code == 200


def test_staff_without_superuser_sees_nothing(user_client):
    response = user_client.get(reverse("admin:models_app_model_changelist"))
    assert response.status_code == 403


def test_anonymous_is_sent_to_login():
    response = Client().get(reverse("admin:models_app_model_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_model_list_columns(superuser_client, populated):
    html = superuser_client.get(reverse("admin:models_app_model_changelist")).content.decode()
    assert "BGE small" in html and "1 collection" in html and "12.1\xa0KB" in html


@pytest.mark.parametrize(
    "query", ["type__exact=embedding", "installed=yes", "installed=no", "source__exact=custom",
              "recommended__exact=1", "q=bge"],
)  # fmt: skip
def test_model_list_filters_and_search(superuser_client, populated, query):
    url = reverse("admin:models_app_model_changelist") + "?" + query
    assert superuser_client.get(url).status_code == 200


def test_operation_progress_column(superuser_client, populated):
    html = superuser_client.get(reverse("admin:models_app_operation_changelist")).content.decode()
    assert "25% (50\xa0bytes of 200\xa0bytes)" in html


def test_read_only_admins_refuse_edits(superuser_client, populated):
    inst = Installation.objects.get()
    url = reverse("admin:models_app_installation_change", args=[inst.pk])
    response = superuser_client.post(url, {"pinned": "on"})
    assert response.status_code == 403
    assert superuser_client.get(reverse("admin:models_app_event_add")).status_code == 403


def test_activate_action_uses_the_service(superuser_client, superuser, populated):
    other = ModelFactory(type="embedding")  # not installed: refused with its code
    response = superuser_client.post(
        reverse("admin:models_app_model_changelist"),
        {"action": "activate_selected", "_selected_action": [populated.pk, other.pk]},
        follow=True,
    )
    html = response.content.decode()
    assert "BGE small is now the active embedding model." in html
    assert f"Cannot activate {other.key}: ERR_NOT_INSTALLED" in html
    assert ActiveModel.objects.get().model == populated
    assert Event.objects.get(kind="switched").actor == superuser


def test_reconcile_action(superuser_client, isolated_store):
    model = ModelFactory(repo_id="acme/thing", allow_patterns=["*.safetensors"])
    write_snapshot(isolated_store, "acme/thing", "a" * 40, {"model.safetensors": b"x" * 10})
    response = superuser_client.post(
        reverse("admin:models_app_model_changelist"),
        {"action": "reconcile_store", "_selected_action": [model.pk]},
        follow=True,
    )
    assert "Store reconciled: 1 newly installed" in response.content.decode()
    assert Installation.objects.get().model == model


def test_curated_entries_are_read_only_custom_are_editable(superuser_client):
    curated = ModelFactory(source="curated")
    custom = ModelFactory(source="custom")
    html = superuser_client.get(
        reverse("admin:models_app_model_change", args=[curated.pk])
    ).content.decode()
    assert 'name="name"' not in html
    html = superuser_client.get(
        reverse("admin:models_app_model_change", args=[custom.pk])
    ).content.decode()
    assert 'name="name"' in html


def test_token_created_in_admin_is_shown_once_and_stored_hashed(superuser_client, superuser):
    response = superuser_client.post(
        reverse("admin:models_app_apitoken_add"),
        {"user": superuser.pk, "name": "laptop"},
        follow=True,
    )
    html = response.content.decode()
    assert "Copy it now" in html
    token = ApiToken.objects.get(name="laptop")
    raw = html.split("<code>")[1].split("</code>")[0]
    assert raw.startswith("myd_") and raw != token.digest
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    assert api.get("/api/v1/models").status_code == 200


def test_collection_admin_add_form_offers_models(superuser_client):
    ModelFactory(type="embedding")
    assert superuser_client.get(reverse("admin:collections_app_collection_add")).status_code == 200


def test_non_superuser_token_cannot_use_the_api():
    from models_app.services import api_token_create

    raw = api_token_create(user=UserFactory(), name="x")[1]
    response = Client(headers={"Authorization": f"Bearer {raw}"}).get("/api/v1/models")
    assert response.status_code == 403


def test_token_revoked_in_admin_goes_through_the_service(superuser_client, superuser, monkeypatch):
    from models_app import services

    token, raw = services.api_token_create(user=superuser, name="ci")
    calls = []
    real = services.api_token_set_revoked
    monkeypatch.setattr(
        services, "api_token_set_revoked", lambda **kw: calls.append(kw) or real(**kw)
    )
    response = superuser_client.post(
        reverse("admin:models_app_apitoken_change", args=[token.pk]), {"revoked": "on"}
    )
    assert response.status_code == 302
    assert [c["revoked"] for c in calls] == [True]
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.revoked and stored.name == "ci" and stored.digest == token.digest
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    assert api.get("/api/v1/models").status_code == 401


def test_operations_admin_lists_a_prune_with_its_deletes(superuser_client):
    from models_app.models import Operation

    prune = Operation.objects.create(kind="prune", state="succeeded")
    Operation.objects.create(model=ModelFactory(key="gone"), kind="delete", parent=prune)
    html = superuser_client.get(reverse("admin:models_app_operation_changelist")).content.decode()
    assert "the models store" in html and "gone" in html
