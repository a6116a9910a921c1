"""The collections admin: the real add, change and delete forms, saved through the services.

Some tests stage a concurrent write between the form's validation and its save, by
wrapping the admin's `save_form` (the step between the two): the other write really
happens in the database and the service really meets it; nothing is mocked. It runs in
the admin view's transaction, so a refused save rolls it back too.
"""

import pytest
from django.urls import reverse

from collections_app.admin import CollectionAdmin, LLMConfigAdmin, UserPreferenceAdmin
from collections_app.models import Collection, LLMConfig, UserPreference
from tests.factories import (
    CollectionFactory,
    LLMConfigFactory,
    ModelFactory,
    UserFactory,
    UserPreferenceFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog():
    return {
        "bge": ModelFactory(key="bge-small", type="embedding"),
        "minilm": ModelFactory(key="minilm", type="embedding"),
        "rerank": ModelFactory(key="bge-reranker", type="reranker"),
        "splade": ModelFactory(key="splade-v3", type="splade"),
        "qwen": ModelFactory(key="qwen-q4", type="llm"),
        "llama": ModelFactory(key="llama-q4", type="llm"),
    }


def url(name: str, *args) -> str:
    return reverse(f"admin:collections_app_{name}", args=args)


def form_errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    return {field: list(errors) for field, errors in form.errors.items()}


def stage_between_validation_and_save(monkeypatch, admin_class, concurrent_write):
    """Run concurrent_write after the form validated and before the admin saves it."""
    original = admin_class.save_form

    def save_form(self, request, form, change):
        concurrent_write()
        return original(self, request, form, change)

    monkeypatch.setattr(admin_class, "save_form", save_form)


# --- user preferences -------------------------------------------------------------------


def preference_form(user, **models) -> dict:
    fields = {"default_embedding_model": "", "default_llm": "", "default_reranker": ""}
    fields.update({field: model.pk for field, model in models.items()})
    return {"user": user.pk, **fields, "_save": "Save"}


def test_preference_add_saves_the_models(superuser_client, catalog):
    alice = UserFactory(username="alice")
    response = superuser_client.post(
        url("userpreference_add"),
        preference_form(alice, default_embedding_model=catalog["bge"], default_llm=catalog["qwen"]),
    )
    assert response.status_code == 302
    pref = UserPreference.objects.get(user=alice)
    assert (pref.default_embedding_model, pref.default_llm) == (catalog["bge"], catalog["qwen"])
    assert pref.default_reranker is None


@pytest.mark.parametrize(
    ("field", "wrong"),
    [("default_llm", "bge"), ("default_embedding_model", "qwen"), ("default_reranker", "splade")],
)
def test_preference_add_refuses_a_wrong_type_model(superuser_client, catalog, field, wrong):
    alice = UserFactory(username="alice")
    response = superuser_client.post(
        url("userpreference_add"), preference_form(alice, **{field: catalog[wrong]})
    )
    assert list(form_errors(response)) == [field]
    assert not UserPreference.objects.exists()


def test_preference_change_refuses_a_wrong_type_model(superuser_client, catalog):
    pref = UserPreferenceFactory(default_llm=catalog["qwen"])
    response = superuser_client.post(
        url("userpreference_change", pref.pk),
        preference_form(pref.user, default_llm=catalog["bge"]),
    )
    assert list(form_errors(response)) == ["default_llm"]
    pref.refresh_from_db()
    assert pref.default_llm == catalog["qwen"]


def test_preference_change_saves_and_clears(superuser_client, catalog):
    pref = UserPreferenceFactory(default_llm=catalog["qwen"], default_reranker=catalog["rerank"])
    response = superuser_client.post(
        url("userpreference_change", pref.pk),
        preference_form(pref.user, default_llm=catalog["llama"]),  # the reranker left empty
    )
    assert response.status_code == 302
    pref.refresh_from_db()
    assert (pref.default_llm, pref.default_reranker) == (catalog["llama"], None)


def test_preference_keeps_its_user_on_change(superuser_client, catalog):
    # A preference is its user's (preference_set is keyed by the user): the change form
    # shows the user but does not move the row to another one.
    pref = UserPreferenceFactory(default_llm=catalog["qwen"])
    owner, bob = pref.user, UserFactory(username="bob")
    response = superuser_client.post(
        url("userpreference_change", pref.pk), preference_form(bob, default_llm=catalog["llama"])
    )
    assert response.status_code == 302
    pref.refresh_from_db()
    assert (pref.user, pref.default_llm) == (owner, catalog["llama"])
    assert not UserPreference.objects.filter(user=bob).exists()


def test_preference_saved_meanwhile_is_updated_not_a_500(superuser_client, catalog, monkeypatch):
    alice = UserFactory(username="alice")
    stage_between_validation_and_save(
        monkeypatch,
        UserPreferenceAdmin,
        lambda: UserPreference.objects.create(user=alice, default_reranker=catalog["rerank"]),
    )
    response = superuser_client.post(
        url("userpreference_add"), preference_form(alice, default_llm=catalog["qwen"])
    )
    assert response.status_code == 302
    pref = UserPreference.objects.get(user=alice)
    assert (pref.default_llm, pref.default_reranker) == (catalog["qwen"], None)


def test_preference_delete(superuser_client, catalog):
    pref = UserPreferenceFactory(default_llm=catalog["qwen"])
    response = superuser_client.post(url("userpreference_delete", pref.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not UserPreference.objects.exists()


# --- LLM configs --------------------------------------------------------------------------


def llm_config_form(name, model=None, description="") -> dict:
    return {"name": name, "description": description, "model": model.pk if model else ""}


def test_llm_config_add_saves(superuser_client, catalog):
    response = superuser_client.post(
        url("llmconfig_add"), llm_config_form(" high ", catalog["qwen"], "the big one")
    )
    assert response.status_code == 302
    config = LLMConfig.objects.get()
    assert (config.name, config.model, config.description) == (
        "high",
        catalog["qwen"],
        "the big one",
    )


def test_llm_config_add_refuses_a_wrong_type_model(superuser_client, catalog):
    response = superuser_client.post(url("llmconfig_add"), llm_config_form("high", catalog["bge"]))
    assert list(form_errors(response)) == ["model"]
    assert not LLMConfig.objects.exists()


def test_llm_config_change_refuses_a_wrong_type_model(superuser_client, catalog):
    config = LLMConfigFactory(name="low", model=catalog["qwen"])
    response = superuser_client.post(
        url("llmconfig_change", config.pk), llm_config_form("low", catalog["rerank"])
    )
    assert list(form_errors(response)) == ["model"]
    config.refresh_from_db()
    assert config.model == catalog["qwen"]


def test_llm_config_change_renames_and_clears_the_model(superuser_client, catalog):
    config = LLMConfigFactory(name="low", model=catalog["qwen"])
    response = superuser_client.post(url("llmconfig_change", config.pk), llm_config_form("small"))
    assert response.status_code == 302
    config.refresh_from_db()
    assert (config.name, config.model) == ("small", None)
    assert LLMConfig.objects.count() == 1


def test_llm_config_name_taken_meanwhile_is_a_form_error(superuser_client, catalog, monkeypatch):
    config = LLMConfigFactory(name="low", model=catalog["qwen"])
    stage_between_validation_and_save(
        monkeypatch, LLMConfigAdmin, lambda: LLMConfig.objects.create(name="small")
    )
    response = superuser_client.post(
        url("llmconfig_change", config.pk), llm_config_form("small", catalog["llama"])
    )
    errors = form_errors(response)
    assert list(errors) == ["name"] and "already exists" in errors["name"][0]
    config.refresh_from_db()
    assert (config.name, config.model) == ("low", catalog["qwen"])


def test_llm_config_delete_and_bulk_delete(superuser_client, catalog):
    low, high, _spare = (LLMConfigFactory(name=n) for n in ("low", "high", "spare"))
    response = superuser_client.post(url("llmconfig_delete", low.pk), {"post": "yes"})
    assert response.status_code == 302
    response = superuser_client.post(
        url("llmconfig_changelist"),
        {"action": "delete_selected", "_selected_action": [high.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert list(LLMConfig.objects.values_list("name", flat=True)) == ["spare"]


# --- collections --------------------------------------------------------------------------


def collection_form(name, embedding, reranker=None, splade=None) -> dict:
    return {
        "name": name,
        "description": "",
        "owner": "",
        "embedding_model": embedding.pk,
        "reranker_model": reranker.pk if reranker else "",
        "splade_model": splade.pk if splade else "",
    }


def test_collection_add_saves(superuser_client, catalog):
    response = superuser_client.post(
        url("collection_add"), collection_form("docs", catalog["bge"], catalog["rerank"])
    )
    assert response.status_code == 302
    docs = Collection.objects.get()
    assert (docs.embedding_model, docs.reranker_model) == (catalog["bge"], catalog["rerank"])


@pytest.mark.parametrize(
    ("field", "wrong"),
    [("embedding_model", "qwen"), ("reranker_model", "bge"), ("splade_model", "rerank")],
)
def test_collection_add_refuses_a_wrong_type_model(superuser_client, catalog, field, wrong):
    data = collection_form("docs", catalog["bge"])
    data[field] = catalog[wrong].pk
    response = superuser_client.post(url("collection_add"), data)
    assert list(form_errors(response)) == [field]
    assert not Collection.objects.exists()


def test_collection_change_refuses_a_wrong_type_model(superuser_client, catalog):
    docs = CollectionFactory(name="docs", embedding_model=catalog["bge"])
    response = superuser_client.post(
        url("collection_change", docs.pk), collection_form("docs", catalog["qwen"])
    )
    assert list(form_errors(response)) == ["embedding_model"]
    docs.refresh_from_db()
    assert docs.embedding_model == catalog["bge"]


def test_collection_model_deleted_meanwhile_is_a_form_error(superuser_client, catalog, monkeypatch):
    # The service locks the models it references and finds this one gone: ERR_NOT_FOUND,
    # shown on the form, not a 500.
    stage_between_validation_and_save(monkeypatch, CollectionAdmin, catalog["minilm"].delete)
    response = superuser_client.post(
        url("collection_add"), collection_form("docs", catalog["minilm"])
    )
    errors = form_errors(response)
    assert list(errors) == ["__all__"] and "deleted meanwhile" in errors["__all__"][0]
    assert not Collection.objects.exists()


def test_collection_name_taken_meanwhile_is_a_form_error(superuser_client, catalog, monkeypatch):
    stage_between_validation_and_save(
        monkeypatch,
        CollectionAdmin,
        lambda: Collection.objects.create(name="docs", embedding_model=catalog["minilm"]),
    )
    response = superuser_client.post(url("collection_add"), collection_form("docs", catalog["bge"]))
    errors = form_errors(response)
    assert list(errors) == ["name"] and "already exists" in errors["name"][0]
    assert not Collection.objects.filter(embedding_model=catalog["bge"]).exists()


def test_collection_delete_and_bulk_delete(superuser_client, catalog):
    docs, papers, _spare = (
        CollectionFactory(name=n, embedding_model=catalog["bge"]) for n in ("docs", "papers", "x")
    )
    response = superuser_client.post(url("collection_delete", docs.pk), {"post": "yes"})
    assert response.status_code == 302
    response = superuser_client.post(
        url("collection_changelist"),
        {"action": "delete_selected", "_selected_action": [papers.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert list(Collection.objects.values_list("name", flat=True)) == ["x"]
