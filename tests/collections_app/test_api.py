"""The collections, preferences and LLM-config API: auth matrix, status codes, query counts."""

import pytest
from django.test import Client

from collections_app.models import Collection, LLMConfig, UserPreference
from tests.factories import (
    CollectionFactory,
    LLMConfigFactory,
    ModelFactory,
    UserFactory,
    UserPreferenceFactory,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"
JSON = "application/json"


@pytest.fixture
def catalog():
    """One model of each type plus a second embedding model; one collection; one LLM tier."""
    models = {
        "bge": ModelFactory(key="bge-small-en-v1.5", name="BGE small", type="embedding"),
        "minilm": ModelFactory(key="minilm", name="MiniLM L6", type="embedding"),
        "rerank": ModelFactory(key="bge-reranker", name="BGE reranker", type="reranker"),
        "splade": ModelFactory(key="splade-v3", name="SPLADE v3", type="splade"),
        "qwen": ModelFactory(key="qwen-q4", name="Qwen Q4", type="llm"),
    }
    models["docs"] = CollectionFactory(name="docs", embedding_model=models["bge"])
    models["low"] = LLMConfigFactory(name="low", model=models["qwen"])
    return models


def new_collection(**fields):
    return {"name": "papers", "embedding_model": "bge-small-en-v1.5", **fields}


ROUTES = [
    ("get", "/collections", None, 200),
    ("post", "/collections", new_collection(), 201),
    ("get", "/collections/{docs}", None, 200),
    ("patch", "/collections/{docs}", {"description": "changed"}, 200),
    ("delete", "/collections/{docs}", None, 204),
    ("get", "/preferences", None, 200),
    ("put", "/preferences", {"default_llm": "qwen-q4"}, 200),
    ("get", "/llm-configs", None, 200),
    ("put", "/llm-configs/high", {"model": "qwen-q4"}, 201),
    ("delete", "/llm-configs/low", None, 204),
]


@pytest.mark.parametrize(("method", "path", "body", "success"), ROUTES)
def test_auth_matrix(persona, catalog, method, path, body, success):
    name, client, refused = persona
    path = path.format(docs=catalog["docs"].id)
    kwargs = {"data": body, "content_type": JSON} if body else {}
    response = getattr(client, method)(API + path, **kwargs)
    if refused:
        assert response.status_code == refused, (name, response.content)
        expected = "ERR_UNAUTHENTICATED" if refused == 401 else "ERR_FORBIDDEN"
        assert response.json()["code"] == expected
        assert Collection.objects.count() == 1 and LLMConfig.objects.count() == 1
        assert not UserPreference.objects.exists()
    else:
        assert response.status_code == success, (name, response.content)


def test_session_write_needs_csrf_token(superuser, catalog):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    response = client.post(f"{API}/collections", data=new_collection(), content_type=JSON)
    assert response.status_code == 403
    assert not Collection.objects.filter(name="papers").exists()


# --- collections ----------------------------------------------------------------------


def test_list_collections_names_models_by_key_and_name(superuser_client, catalog):
    CollectionFactory(
        name="wiki",
        embedding_model=catalog["minilm"],
        reranker_model=catalog["rerank"],
        splade_model=catalog["splade"],
        owner=UserFactory(username="alice"),
    )
    response = superuser_client.get(f"{API}/collections")
    assert response.status_code == 200
    docs, wiki = response.json()
    assert docs["name"] == "docs" and docs["reranker_model"] is None and docs["owner"] is None
    assert wiki["owner"] == "alice"
    assert wiki["embedding_model"] == {"key": "minilm", "name": "MiniLM L6"}
    assert wiki["reranker_model"] == {"key": "bge-reranker", "name": "BGE reranker"}
    assert wiki["splade_model"] == {"key": "splade-v3", "name": "SPLADE v3"}
    assert set(wiki) == {
        "id", "name", "description", "owner", "embedding_model", "reranker_model",
        "splade_model", "created_at", "updated_at",
    }  # fmt: skip


@pytest.mark.parametrize("n", [3, 100])
def test_list_collections_query_count_is_independent_of_size(
    superuser_client, django_assert_num_queries, n
):
    owner = UserFactory()
    rerank = ModelFactory(type="reranker")
    splade = ModelFactory(type="splade")
    for _ in range(n):
        CollectionFactory(reranker_model=rerank, splade_model=splade, owner=owner)
    with django_assert_num_queries(3):  # session, user, collections with their models
        response = superuser_client.get(f"{API}/collections")
    assert len(response.json()) == n


def test_create_collection_is_201_and_owned_by_the_caller(superuser_client, superuser, catalog):
    body = new_collection(
        description="Papers", reranker_model="bge-reranker", splade_model="splade-v3"
    )
    response = superuser_client.post(f"{API}/collections", data=body, content_type=JSON)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["owner"] == superuser.username
    assert data["embedding_model"] == {"key": "bge-small-en-v1.5", "name": "BGE small"}
    assert data["reranker_model"]["key"] == "bge-reranker"
    assert data["splade_model"]["key"] == "splade-v3"
    collection = Collection.objects.get(pk=data["id"])
    assert (collection.name, collection.description, collection.owner) == (
        "papers", "Papers", superuser,
    )  # fmt: skip


def test_create_collection_by_token_is_owned_by_the_token_user(token_client, superuser, catalog):
    response = token_client.post(f"{API}/collections", data=new_collection(), content_type=JSON)
    assert response.status_code == 201
    assert Collection.objects.get(name="papers").owner == superuser


@pytest.mark.parametrize("field", ["embedding_model", "reranker_model", "splade_model"])
def test_create_collection_with_unknown_model_key_is_404(superuser_client, catalog, field):
    body = new_collection(**{field: "no-such-model"})
    response = superuser_client.post(f"{API}/collections", data=body, content_type=JSON)
    assert response.status_code == 404
    assert response.json() == {
        "code": "ERR_NOT_FOUND",
        "message": f"No model with key 'no-such-model' (for {field}).",
        "details": {"model": "no-such-model", "field": field},
    }
    assert not Collection.objects.filter(name="papers").exists()


@pytest.mark.parametrize(
    ("field", "key", "model_type", "expected", "message"),
    [
        ("embedding_model", "qwen-q4", "llm", "embedding",
         "qwen-q4 is an LLM model; embedding_model needs an embedding model."),
        ("reranker_model", "minilm", "embedding", "reranker",
         "minilm is an embedding model; reranker_model needs a reranker model."),
        ("splade_model", "bge-reranker", "reranker", "splade",
         "bge-reranker is a reranker model; splade_model needs a SPLADE model."),
    ],
)  # fmt: skip
def test_create_collection_with_wrong_model_type_is_409(
    superuser_client, catalog, field, key, model_type, expected, message
):
    body = new_collection(**{field: key})
    response = superuser_client.post(f"{API}/collections", data=body, content_type=JSON)
    assert response.status_code == 409
    data = response.json()
    assert data["code"] == "ERR_INCOMPATIBLE"
    assert data["message"] == message
    assert data["details"] == {
        "model": key, "model_type": model_type, "expected_type": expected, "field": field,
    }  # fmt: skip
    assert not Collection.objects.filter(name="papers").exists()


def test_create_collection_with_duplicate_name_is_409(superuser_client, catalog):
    # A conflict with what exists, not a malformed request: the same body is valid once
    # the other collection is gone.
    body = new_collection(name="docs")
    response = superuser_client.post(f"{API}/collections", data=body, content_type=JSON)
    assert response.status_code == 409
    assert response.json() == {
        "code": "ERR_ALREADY_EXISTS",
        "message": "A collection named 'docs' already exists.",
        "details": {"field": "name", "name": "docs"},
    }
    assert Collection.objects.count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"name": "papers"},  # no embedding model
        {"embedding_model": "bge-small-en-v1.5"},  # no name
        new_collection(name=""),
        new_collection(name="x" * 201),
        new_collection(embedding_model=None),
        new_collection(embedding_model_id=1),  # models are named by key, never by id
        new_collection(description=["not", "text"]),
    ],
)
def test_create_collection_with_bad_payload_is_422(superuser_client, catalog, body):
    response = superuser_client.post(f"{API}/collections", data=body, content_type=JSON)
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "ERR_INVALID"
    assert Collection.objects.count() == 1


def test_create_collection_with_malformed_json_is_422_not_500(superuser_client, catalog):
    response = superuser_client.post(f"{API}/collections", data="{nope", content_type=JSON)
    assert response.status_code == 422
    assert response.json()["code"] == "ERR_INVALID"


def test_get_collection(superuser_client, catalog):
    docs = catalog["docs"]
    response = superuser_client.get(f"{API}/collections/{docs.id}")
    assert response.status_code == 200
    assert response.json()["name"] == "docs"
    assert response.json()["embedding_model"]["key"] == "bge-small-en-v1.5"


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_unknown_collection_is_404(superuser_client, catalog, method):
    kwargs = {"data": {"description": "x"}, "content_type": JSON} if method == "patch" else {}
    response = getattr(superuser_client, method)(f"{API}/collections/999999", **kwargs)
    assert response.status_code == 404
    assert response.json()["code"] == "ERR_NOT_FOUND"
    assert response.json()["details"] == {"collection": 999999}


def test_patch_collection_changes_only_the_fields_sent(superuser_client, catalog):
    docs = catalog["docs"]
    body = {"description": "All docs", "reranker_model": "bge-reranker"}
    response = superuser_client.patch(f"{API}/collections/{docs.id}", data=body, content_type=JSON)
    assert response.status_code == 200, response.content
    assert response.json()["description"] == "All docs"
    assert response.json()["reranker_model"]["key"] == "bge-reranker"
    docs.refresh_from_db()
    assert docs.name == "docs" and docs.embedding_model == catalog["bge"]
    assert docs.reranker_model == catalog["rerank"]
    response = superuser_client.patch(
        f"{API}/collections/{docs.id}", data={"reranker_model": None}, content_type=JSON
    )
    assert response.status_code == 200
    assert response.json()["reranker_model"] is None
    docs.refresh_from_db()
    assert docs.reranker_model is None and docs.description == "All docs"


def test_patch_collection_embedding_model(superuser_client, catalog):
    docs = catalog["docs"]
    response = superuser_client.patch(
        f"{API}/collections/{docs.id}", data={"embedding_model": "minilm"}, content_type=JSON
    )
    assert response.status_code == 200
    assert response.json()["embedding_model"] == {"key": "minilm", "name": "MiniLM L6"}


@pytest.mark.parametrize(
    ("field", "key"),
    [
        ("embedding_model", "bge-reranker"),
        ("reranker_model", "qwen-q4"),
        ("splade_model", "minilm"),
    ],
)
def test_patch_collection_with_wrong_model_type_is_409(superuser_client, catalog, field, key):
    docs = catalog["docs"]
    response = superuser_client.patch(
        f"{API}/collections/{docs.id}", data={field: key}, content_type=JSON
    )
    assert response.status_code == 409
    assert response.json()["code"] == "ERR_INCOMPATIBLE"
    assert response.json()["details"]["model"] == key
    docs.refresh_from_db()
    assert docs.embedding_model == catalog["bge"]


def test_patch_collection_with_unknown_model_key_is_404(superuser_client, catalog):
    docs = catalog["docs"]
    response = superuser_client.patch(
        f"{API}/collections/{docs.id}", data={"splade_model": "nope"}, content_type=JSON
    )
    assert response.status_code == 404
    assert response.json()["details"] == {"model": "nope", "field": "splade_model"}


def test_patch_collection_to_a_taken_name_is_409(superuser_client, catalog):
    other = CollectionFactory(name="other", embedding_model=catalog["bge"])
    response = superuser_client.patch(
        f"{API}/collections/{other.id}", data={"name": "docs"}, content_type=JSON
    )
    assert response.status_code == 409
    assert response.json()["code"] == "ERR_ALREADY_EXISTS"
    other.refresh_from_db()
    assert other.name == "other"


@pytest.mark.parametrize(
    "body", [{"name": None}, {"embedding_model": None}, {"description": None}, {"id": 5}]
)
def test_patch_collection_with_bad_payload_is_422(superuser_client, catalog, body):
    docs = catalog["docs"]
    response = superuser_client.patch(f"{API}/collections/{docs.id}", data=body, content_type=JSON)
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "ERR_INVALID"
    docs.refresh_from_db()
    assert docs.embedding_model == catalog["bge"]


def test_delete_collection_is_204(superuser_client, catalog):
    docs = catalog["docs"]
    response = superuser_client.delete(f"{API}/collections/{docs.id}")
    assert response.status_code == 204
    assert response.content == b""
    assert not Collection.objects.exists()


# --- preferences ----------------------------------------------------------------------


def test_preferences_are_nulls_when_none_saved(superuser_client):
    response = superuser_client.get(f"{API}/preferences")
    assert response.status_code == 200
    assert response.json() == {
        "default_embedding_model": None,
        "default_llm": None,
        "default_reranker": None,
        "updated_at": None,
    }


def test_put_preferences_sets_by_key(superuser_client, superuser, catalog):
    body = {"default_embedding_model": "minilm", "default_llm": "qwen-q4"}
    response = superuser_client.put(f"{API}/preferences", data=body, content_type=JSON)
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["default_embedding_model"] == {"key": "minilm", "name": "MiniLM L6"}
    assert data["default_llm"] == {"key": "qwen-q4", "name": "Qwen Q4"}
    assert data["default_reranker"] is None
    assert superuser_client.get(f"{API}/preferences").json() == data
    pref = UserPreference.objects.get(user=superuser)
    assert pref.default_embedding_model == catalog["minilm"]


def test_put_preferences_null_clears_and_omitted_fields_stay(superuser_client, superuser, catalog):
    UserPreferenceFactory(
        user=superuser, default_embedding_model=catalog["bge"], default_llm=catalog["qwen"]
    )
    response = superuser_client.put(
        f"{API}/preferences", data={"default_llm": None}, content_type=JSON
    )
    assert response.status_code == 200
    assert response.json()["default_llm"] is None
    assert response.json()["default_embedding_model"]["key"] == "bge-small-en-v1.5"
    pref = UserPreference.objects.get(user=superuser)
    assert pref.default_llm is None and pref.default_embedding_model == catalog["bge"]


def test_preferences_are_per_user(superuser_client, catalog):
    other = UserFactory(username="other-root", is_superuser=True, is_staff=True)
    other_client = Client()
    other_client.force_login(other)
    superuser_client.put(
        f"{API}/preferences", data={"default_embedding_model": "bge-small-en-v1.5"},
        content_type=JSON,
    )  # fmt: skip
    other_client.put(
        f"{API}/preferences", data={"default_embedding_model": "minilm"}, content_type=JSON
    )
    mine = superuser_client.get(f"{API}/preferences").json()
    theirs = other_client.get(f"{API}/preferences").json()
    assert mine["default_embedding_model"]["key"] == "bge-small-en-v1.5"
    assert theirs["default_embedding_model"]["key"] == "minilm"
    assert UserPreference.objects.count() == 2


@pytest.mark.parametrize(
    ("field", "key", "expected"),
    [
        ("default_embedding_model", "qwen-q4", "embedding"),
        ("default_llm", "minilm", "llm"),
        ("default_reranker", "splade-v3", "reranker"),
    ],
)
def test_put_preferences_with_wrong_model_type_is_409(
    superuser_client, catalog, field, key, expected
):
    response = superuser_client.put(f"{API}/preferences", data={field: key}, content_type=JSON)
    assert response.status_code == 409
    assert response.json()["code"] == "ERR_INCOMPATIBLE"
    assert response.json()["details"]["expected_type"] == expected
    assert not UserPreference.objects.exists()


def test_put_preferences_with_unknown_model_key_is_404(superuser_client, catalog):
    response = superuser_client.put(
        f"{API}/preferences", data={"default_reranker": "nope"}, content_type=JSON
    )
    assert response.status_code == 404
    assert response.json()["details"] == {"model": "nope", "field": "default_reranker"}


@pytest.mark.parametrize("body", [{"default_llm": 3}, {"default_model": "qwen-q4"}])
def test_put_preferences_with_bad_payload_is_422(superuser_client, catalog, body):
    response = superuser_client.put(f"{API}/preferences", data=body, content_type=JSON)
    assert response.status_code == 422
    assert response.json()["code"] == "ERR_INVALID"


# --- LLM configs ----------------------------------------------------------------------


def test_list_llm_configs(superuser_client, catalog, django_assert_num_queries):
    LLMConfigFactory(name="high", description="Best quality")
    with django_assert_num_queries(3):  # session, user, configs with their models
        response = superuser_client.get(f"{API}/llm-configs")
    assert response.status_code == 200
    high, low = response.json()
    assert (high["name"], high["description"], high["model"]) == ("high", "Best quality", None)
    assert low["name"] == "low" and low["model"] == {"key": "qwen-q4", "name": "Qwen Q4"}


def test_put_llm_config_creates_201_then_updates_200(superuser_client, catalog):
    body = {"description": "HyDE", "model": "qwen-q4"}
    created = superuser_client.put(f"{API}/llm-configs/high", data=body, content_type=JSON)
    assert created.status_code == 201, created.content
    assert created.json()["model"] == {"key": "qwen-q4", "name": "Qwen Q4"}
    updated = superuser_client.put(
        f"{API}/llm-configs/high", data={"description": "Summaries"}, content_type=JSON
    )
    assert updated.status_code == 200
    assert updated.json()["description"] == "Summaries"
    assert updated.json()["model"]["key"] == "qwen-q4"  # not sent: kept
    cleared = superuser_client.put(
        f"{API}/llm-configs/high", data={"model": None}, content_type=JSON
    )
    assert cleared.status_code == 200 and cleared.json()["model"] is None
    config = LLMConfig.objects.get(name="high")
    assert (config.description, config.model) == ("Summaries", None)


def test_put_llm_config_with_wrong_model_type_is_409(superuser_client, catalog):
    response = superuser_client.put(
        f"{API}/llm-configs/low", data={"model": "bge-small-en-v1.5"}, content_type=JSON
    )
    assert response.status_code == 409
    data = response.json()
    assert data["code"] == "ERR_INCOMPATIBLE"
    assert data["details"] == {
        "model": "bge-small-en-v1.5", "model_type": "embedding", "expected_type": "llm",
        "field": "model",
    }  # fmt: skip
    assert LLMConfig.objects.get(name="low").model == catalog["qwen"]


def test_put_llm_config_with_unknown_model_key_is_404(superuser_client, catalog):
    response = superuser_client.put(
        f"{API}/llm-configs/high", data={"model": "nope"}, content_type=JSON
    )
    assert response.status_code == 404
    assert not LLMConfig.objects.filter(name="high").exists()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("high", {"description": None}),
        ("high", {"model": 7}),
        ("high", {"tier": "x"}),
        ("x" * 51, {"description": "too long a name"}),
    ],
)
def test_put_llm_config_with_bad_payload_is_422(superuser_client, catalog, name, body):
    response = superuser_client.put(f"{API}/llm-configs/{name}", data=body, content_type=JSON)
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "ERR_INVALID"
    assert LLMConfig.objects.count() == 1


def test_delete_llm_config_is_204(superuser_client, catalog):
    response = superuser_client.delete(f"{API}/llm-configs/low")
    assert response.status_code == 204
    assert not LLMConfig.objects.exists()


def test_delete_unknown_llm_config_is_404(superuser_client, catalog):
    response = superuser_client.delete(f"{API}/llm-configs/nope")
    assert response.status_code == 404
    assert response.json()["details"] == {"llm_config": "nope"}
