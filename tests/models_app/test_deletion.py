"""Safe deletion: the usage preflight table, the 409 bodies, the race, byte accounting."""

import pytest
from django.test import Client
from django.urls import reverse

from collections_app.models import LLMConfig, UserPreference
from models_app import selectors, services
from models_app.engine import operation_run
from models_app.models import ActiveModel, Event, Installation, Operation
from models_app.services.reconcile import store_reconcile
from tests.factories import (
    CollectionFactory,
    LLMConfigFactory,
    ModelFactory,
    OperationFactory,
    UserFactory,
    UserPreferenceFactory,
)
from tests.hub_cache import write_partial, write_snapshot

pytestmark = pytest.mark.django_db

API = "/api/v1"
C1, C2, C3 = "1" * 40, "2" * 40, "3" * 40
WEIGHTS = b"W" * 5000
CONFIG_A = b'{"a": 1}'
CONFIG_B = b'{"b": 22}'


@pytest.fixture
def store_models(isolated_store, settings):
    """A real store: an embedding model with two revisions sharing its weights blob, a GGUF
    repo with two entries (both installed), and an unmanaged repo."""
    settings.DEFAULT_EMBEDDING_MODEL = "someone/else-default"
    embed = ModelFactory(
        key="embed", repo_id="acme/embed", allow_patterns=["*.json", "*.safetensors"]
    )
    q4 = ModelFactory(
        key="llm-q4",
        repo_id="acme/llm-GGUF",
        type="llm",
        gguf_file="llm-q4.gguf",
        allow_patterns=[],
    )
    q5 = ModelFactory(
        key="llm-q5",
        repo_id="acme/llm-GGUF",
        type="llm",
        gguf_file="llm-q5.gguf",
        allow_patterns=[],
    )
    write_snapshot(
        isolated_store,
        "acme/embed",
        C1,
        {"config.json": CONFIG_A, "model.safetensors": WEIGHTS},
        refs=(),
    )
    write_snapshot(
        isolated_store, "acme/embed", C2, {"config.json": CONFIG_B, "model.safetensors": WEIGHTS}
    )
    write_snapshot(
        isolated_store,
        "acme/llm-GGUF",
        C3,
        {"llm-q4.gguf": b"4" * 4000, "llm-q5.gguf": b"5" * 5000},
    )
    write_snapshot(isolated_store, "other/unmanaged", C1, {"model.bin": b"u" * 700})
    write_partial(isolated_store, "acme/embed", "f" * 64, 300)
    store_reconcile()
    return {"embed": embed, "q4": q4, "q5": q5}


def usage(client, key):
    response = client.get(f"{API}/models/{key}/usage")
    assert response.status_code == 200
    return response.json()


def test_usage_of_an_unused_model(superuser_client, store_models):
    body = usage(superuser_client, "embed")
    assert body["installed"] and body["can_delete"] and not body["requires_confirmation"]
    assert body["warnings"] == [] and body["blocked_by_collections"] == []
    assert body["loaded_in_runtime"] is False
    # Both revisions go; the weights blob they share is counted once.
    assert body["bytes_freed"] == len(WEIGHTS) + len(CONFIG_A) + len(CONFIG_B)
    assert body["partial_bytes"] == 300


def test_bytes_freed_leave_out_what_another_entry_keeps(superuser_client, store_models):
    assert usage(superuser_client, "llm-q4")["bytes_freed"] == 4000
    assert usage(superuser_client, "llm-q5")["bytes_freed"] == 5000


def test_delete_of_one_gguf_entry_keeps_the_other(superuser_client, store_models, isolated_store):
    response = superuser_client.delete(f"{API}/models/llm-q4")
    assert response.status_code == 202
    op_id = response.json()["operation"]["id"]
    assert operation_run(operation_id=op_id) == "succeeded"
    assert not Installation.objects.filter(model=store_models["q4"]).exists()
    assert Installation.objects.filter(model=store_models["q5"]).exists()
    snapshot = isolated_store / "models--acme--llm-GGUF" / "snapshots" / C3
    assert not (snapshot / "llm-q4.gguf").exists()
    assert (snapshot / "llm-q5.gguf").read_bytes() == b"5" * 5000
    event = Event.objects.get(kind="deleted")
    assert event.data["bytes_freed"] == 4000


def test_delete_removes_revisions_blobs_and_partials(
    superuser_client, store_models, isolated_store
):
    before = selectors.cache_summary()
    op_id = superuser_client.delete(f"{API}/models/embed").json()["operation"]["id"]
    assert operation_run(operation_id=op_id) == "succeeded"
    assert not (isolated_store / "models--acme--embed").exists()
    # other/unmanaged shares commit C1 with acme/embed: it must survive.
    assert (isolated_store / "models--other--unmanaged" / "snapshots" / C1 / "model.bin").exists()
    after = selectors.cache_summary()
    assert before["managed_bytes"] - after["managed_bytes"] == len(WEIGHTS) + len(CONFIG_A) + len(
        CONFIG_B
    )
    assert after["partial_bytes"] == 0
    assert after["unmanaged_bytes"] == 700  # the unmanaged repo is untouched
    op = Operation.objects.get(pk=op_id)
    assert op.kind == "delete" and op.state == "succeeded"


def test_collection_blocks_with_409_naming_it(superuser_client, store_models):
    CollectionFactory(name="papers", embedding_model=store_models["embed"])
    body = usage(superuser_client, "embed")
    assert body["blocked_by_collections"] == ["papers"] and not body["can_delete"]
    response = superuser_client.delete(f"{API}/models/embed?confirm=true")
    assert response.status_code == 409
    error = response.json()
    assert error["code"] == "ERR_IN_USE" and "papers" in error["message"]
    assert error["details"]["usage"]["blocked_by_collections"] == ["papers"]
    assert not Operation.objects.filter(kind="delete").exists()


@pytest.mark.parametrize("condition", ["preference", "llm_config", "default", "active"])
def test_each_warning_requires_confirmation_then_resets(
    superuser_client, settings, store_models, condition
):
    embed, q4 = store_models["embed"], store_models["q4"]
    target = q4 if condition == "llm_config" else embed
    if condition == "preference":
        pref = UserPreferenceFactory(default_embedding_model=embed)
    elif condition == "llm_config":
        config = LLMConfigFactory(name="high", model=q4)
    elif condition == "default":
        settings.DEFAULT_EMBEDDING_MODEL = "acme/embed"
    else:
        services.model_activate(model=embed)

    body = usage(superuser_client, target.key)
    assert body["requires_confirmation"] and body["can_delete"] and len(body["warnings"]) == 1
    refused = superuser_client.delete(f"{API}/models/{target.key}")
    assert refused.status_code == 409
    assert refused.json()["code"] == "ERR_CONFIRM_REQUIRED"
    assert refused.json()["details"]["usage"]["warnings"] == body["warnings"]

    accepted = superuser_client.delete(f"{API}/models/{target.key}?confirm=true")
    assert accepted.status_code == 202
    assert operation_run(operation_id=accepted.json()["operation"]["id"]) == "succeeded"
    assert not Installation.objects.filter(model=target).exists()
    if condition == "preference":
        pref.refresh_from_db()
        assert pref.default_embedding_model is None
    elif condition == "llm_config":
        config.refresh_from_db()
        assert config.model is None
    elif condition == "active":
        assert not ActiveModel.objects.exists()


def test_warning_counts(superuser_client, store_models):
    embed = store_models["embed"]
    UserPreferenceFactory.create_batch(2, default_embedding_model=embed)
    body = usage(superuser_client, "embed")
    assert body["user_preferences_count"] == 2
    assert body["warnings"] == [
        "2 user preferences use this model; they will be reset to the defaults."
    ]


def test_not_installed_is_a_clear_no_op(superuser_client, store_models):
    ModelFactory(key="never-downloaded")
    response = superuser_client.delete(f"{API}/models/never-downloaded")
    assert response.status_code == 200
    assert response.json()["status"] == "not_installed" and response.json()["operation"] is None


def test_collection_created_after_the_preflight_still_blocks(
    superuser_client, store_models, isolated_store
):
    embed = store_models["embed"]
    accepted = superuser_client.delete(f"{API}/models/embed")
    assert accepted.status_code == 202
    # The race: a collection appears between the preflight and the delete's transaction.
    CollectionFactory(name="late", embedding_model=embed)
    op_id = accepted.json()["operation"]["id"]
    assert operation_run(operation_id=op_id) == "failed"
    op = Operation.objects.get(pk=op_id)
    assert op.error_code == "ERR_IN_USE" and "late" in op.error_message
    assert Installation.objects.filter(model=embed).exists()
    assert (
        isolated_store / "models--acme--embed" / "snapshots" / C2 / "model.safetensors"
    ).exists()


def test_delete_and_download_exclude_each_other(superuser_client, store_models):
    embed = store_models["embed"]
    download = OperationFactory(model=embed, kind="download", state="running")
    refused = superuser_client.delete(f"{API}/models/embed")
    assert refused.status_code == 409 and refused.json()["details"]["operation"] == download.id
    download.state = "failed"
    download.save()
    first = superuser_client.delete(f"{API}/models/embed")
    second = superuser_client.delete(f"{API}/models/embed")
    assert first.status_code == 202 and second.status_code == 200
    assert second.json()["operation"]["id"] == first.json()["operation"]["id"]
    blocked = superuser_client.post(f"{API}/models/embed/download")
    assert blocked.status_code == 409 and blocked.json()["code"] == "ERR_ALREADY_RUNNING"


def test_legacy_installs_are_not_deleted(superuser_client, settings, tmp_path):
    settings.LEGACY_HUB_DIR = tmp_path / "legacy"
    ModelFactory(key="old", repo_id="acme/old", allow_patterns=["*.bin"])
    write_snapshot(settings.LEGACY_HUB_DIR, "acme/old", C1, {"model.bin": b"x" * 10})
    store_reconcile()
    response = superuser_client.delete(f"{API}/models/old?confirm=true")
    assert response.status_code == 409 and response.json()["code"] == "ERR_INVALID_STATE"


@pytest.mark.parametrize("persona_name", ["anonymous", "user"])
def test_delete_routes_refuse_non_superusers(store_models, persona_name):
    client = Client()
    if persona_name == "user":
        client.force_login(UserFactory())
    expected = 401 if persona_name == "anonymous" else 403
    assert client.get(f"{API}/models/embed/usage").status_code == expected
    assert client.delete(f"{API}/models/embed").status_code == expected


# --- the admin action -------------------------------------------------------------------


def admin_delete(client, models, confirm=False):
    data = {"action": "delete_files", "_selected_action": [m.pk for m in models]}
    if confirm:
        data["confirm"] = "yes"
    return client.post(reverse("admin:models_app_model_changelist"), data, follow=confirm)


def test_admin_shows_the_preflight_before_deleting(superuser_client, store_models):
    embed, q4 = store_models["embed"], store_models["q4"]
    CollectionFactory(name="papers", embedding_model=embed)
    LLMConfigFactory(name="high", model=q4)
    page = admin_delete(superuser_client, [embed, q4]).content.decode()
    assert "Blocked: used by collection papers." in page
    assert "LLM config high uses this model; it will be cleared." in page
    assert "cannot be undone" in page
    assert not Operation.objects.exists()  # nothing happens before the confirmation


def test_admin_confirmation_deletes_through_the_service(superuser_client, store_models):
    embed, q4 = store_models["embed"], store_models["q4"]
    CollectionFactory(name="papers", embedding_model=embed)
    LLMConfigFactory(name="high", model=q4)
    html = admin_delete(superuser_client, [embed, q4], confirm=True).content.decode()
    assert "Cannot delete embed: ERR_IN_USE" in html
    op = Operation.objects.get(kind="delete")
    assert op.model == q4
    assert operation_run(operation_id=op.id) == "succeeded"
    assert LLMConfig.objects.get(name="high").model is None


def test_admin_has_no_bulk_row_delete(superuser_client, store_models):
    response = superuser_client.get(reverse("admin:models_app_model_changelist"))
    assert "delete_selected" not in response.content.decode()
    assert UserPreference.objects.count() == 0


@pytest.mark.parametrize(
    ("condition", "warning"),
    [
        ("preference", "1 user preference uses this model; they will be reset to the defaults."),
        ("llm_config", "LLM config low uses this model; it will be cleared."),
        ("default", "This is the default embedding model (DEFAULT_EMBEDDING_MODEL)"),
        ("active", "This is the active LLM model; the active slot will be cleared."),
    ],
)
def test_admin_action_for_each_warning_row(
    superuser_client, settings, store_models, condition, warning
):
    embed, q4 = store_models["embed"], store_models["q4"]
    target = embed if condition in ("preference", "default") else q4
    if condition == "preference":
        pref = UserPreferenceFactory(default_embedding_model=embed)
    elif condition == "llm_config":
        LLMConfigFactory(name="low", model=q4)
    elif condition == "default":
        settings.DEFAULT_EMBEDDING_MODEL = embed.key
    else:
        services.model_activate(model=q4)
    page = admin_delete(superuser_client, [target]).content.decode()
    assert warning in page and "despite the warnings" in page
    assert not Operation.objects.exists()
    admin_delete(superuser_client, [target], confirm=True)
    op = Operation.objects.get(kind="delete", model=target)
    assert operation_run(operation_id=op.id) == "succeeded"
    if condition == "preference":
        pref.refresh_from_db()
        assert pref.default_embedding_model is None
    if condition == "active":
        assert not ActiveModel.objects.exists()
