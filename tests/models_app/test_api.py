"""The models API: auth matrix, filters, detail, activation, errors, query counts."""

import pytest
from django.test import Client

from models_app.models import ActiveModel, Event, Operation
from tests.factories import (
    CollectionFactory,
    InstallationFactory,
    ModelFactory,
    OperationFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def catalog():
    """Six models across the four types; two installed; one used by a collection."""
    bge = ModelFactory(
        key="bge-small",
        name="BGE small",
        type="embedding",
        recommended=True,
        family="BGE",
        download_size=130,
    )
    mini = ModelFactory(
        key="minilm",
        name="MiniLM L6",
        type="embedding",
        family="MiniLM",
        download_size=90,
        description="Fast English sentence embeddings.",
    )
    qwen = ModelFactory(
        key="qwen-q4",
        name="Qwen2.5 7B Q4",
        type="llm",
        gguf_file="q.gguf",
        allow_patterns=[],
        download_size=4_000,
        recommended=True,
    )
    rr = ModelFactory(key="bge-rerank", name="BGE reranker", type="reranker", download_size=500)
    sp = ModelFactory(key="splade-v3", name="SPLADE v3", type="splade", download_size=400)
    gemma = ModelFactory(
        key="gemma-q5",
        name="Gemma 3 Q5",
        type="llm",
        gguf_file="g.gguf",
        allow_patterns=[],
        download_size=None,
    )
    InstallationFactory(model=bge, size_on_disk=133)
    OperationFactory(model=rr, kind="download", state="failed", error_code="ERR_NETWORK")
    OperationFactory(model=sp, kind="download", state="queued")
    InstallationFactory(model=qwen, size_on_disk=4_100)
    CollectionFactory(name="docs", embedding_model=bge)
    return {m.key: m for m in (bge, mini, qwen, rr, sp, gemma)}


ROUTES = [
    ("get", "/models", None, 200),
    ("get", "/models/bge-small", None, 200),
    ("post", "/models/bge-small/activate", None, 200),
    ("get", "/active-models", None, 200),
    ("post", "/active-models", {"type": "embedding", "model": "bge-small"}, 200),
    ("get", "/cache", None, 200),
    ("post", "/store/reconcile", None, 200),
    ("post", "/models/minilm/download", None, 202),
    ("get", "/operations", None, 200),
    ("get", "/operations/{queued}", None, 200),
    ("post", "/operations/{queued}/cancel", None, 200),
    ("post", "/operations/{failed}/retry", None, 202),
]


@pytest.mark.parametrize(("method", "path", "body", "success"), ROUTES)
def test_auth_matrix(persona, catalog, method, path, body, success):
    name, client, refused = persona
    path = path.format(
        queued=Operation.objects.get(state="queued").id,
        failed=Operation.objects.get(state="failed").id,
    )
    kwargs = {"data": body, "content_type": "application/json"} if body else {}
    response = getattr(client, method)(API + path, **kwargs)
    if refused:
        assert response.status_code == refused, (name, response.content)
        expected = "ERR_UNAUTHENTICATED" if refused == 401 else "ERR_FORBIDDEN"
        assert response.json()["code"] == expected
    else:
        assert response.status_code == success, (name, response.content)


def test_session_post_needs_csrf_token(superuser, catalog):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    response = client.post(f"{API}/models/bge-small/activate")
    assert response.status_code == 403
    assert "CSRF" in response.json()["message"]
    client.get("/admin/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = client.post(f"{API}/models/bge-small/activate", headers={"X-CSRFToken": token})
    assert response.status_code == 200


def test_revoked_token_is_refused(superuser):
    from models_app.models import ApiToken
    from models_app.services import api_token_create

    token, raw = api_token_create(user=superuser, name="old")
    ApiToken.objects.filter(pk=token.pk).update(revoked=True)
    response = Client(headers={"Authorization": f"Bearer {raw}"}).get(f"{API}/models")
    assert response.status_code == 401


def test_token_is_stored_hashed(superuser):
    from models_app.services import api_token_create

    token, raw = api_token_create(user=superuser, name="ci")
    token.refresh_from_db()
    assert raw not in (token.digest, token.hint) and len(token.digest) == 64
    assert raw.startswith(token.hint)


def keys(response):
    assert response.status_code == 200, response.content
    return [item["key"] for item in response.json()["items"]]


def test_list_all_sorted_by_name(superuser_client, catalog):
    assert keys(superuser_client.get(f"{API}/models")) == [
        "bge-rerank", "bge-small", "gemma-q5", "minilm", "qwen-q4", "splade-v3",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("type=embedding", ["bge-small", "minilm"]),
        ("type=llm&status=installed", ["qwen-q4"]),
        ("status=installed", ["bge-small", "qwen-q4"]),
        ("status=available&type=llm", ["gemma-q5"]),
        ("recommended=true", ["bge-small", "qwen-q4"]),
        ("search=bge", ["bge-rerank", "bge-small"]),
        ("search=english+fast", ["minilm"]),
        ("search=nothing-like-this", []),
        ("sort=size", ["minilm", "bge-small", "splade-v3", "bge-rerank", "qwen-q4", "gemma-q5"]),
        ("sort=-size", ["qwen-q4", "bge-rerank", "splade-v3", "bge-small", "minilm", "gemma-q5"]),
        ("sort=-name&type=embedding", ["minilm", "bge-small"]),
        ("sort=recommended&page_size=2", ["bge-small", "qwen-q4"]),
    ],
)
def test_list_filters(superuser_client, catalog, query, expected):
    assert keys(superuser_client.get(f"{API}/models?{query}")) == expected


def test_list_item_carries_install_and_usage(superuser_client, catalog):
    items = {i["key"]: i for i in superuser_client.get(f"{API}/models").json()["items"]}
    assert items["bge-small"]["installed"] is True
    assert items["bge-small"]["size_on_disk"] == 133
    assert items["bge-small"]["collections_count"] == 1
    assert items["minilm"]["installed"] is False and items["minilm"]["size_on_disk"] is None
    assert items["minilm"]["collections_count"] == 0


def test_pagination(superuser_client, catalog):
    body = superuser_client.get(f"{API}/models?page=2&page_size=4").json()
    assert (body["count"], body["page"], body["pages"]) == (6, 2, 2)
    assert [i["key"] for i in body["items"]] == ["qwen-q4", "splade-v3"]


@pytest.mark.parametrize(
    "query", ["type=vision", "status=broken", "sort=cost", "page=0", "page_size=1000"]
)
def test_bad_filters_are_422_with_code(superuser_client, query):
    response = superuser_client.get(f"{API}/models?{query}")
    assert response.status_code == 422
    assert response.json()["code"] == "ERR_INVALID"


def test_detail_has_registry_fields_install_state_and_memory_table(superuser_client, catalog):
    body = superuser_client.get(f"{API}/models/bge-small").json()
    assert body["repo_id"] == catalog["bge-small"].repo_id
    assert body["installation"]["size_on_disk"] == 133
    assert body["collections_count"] == 1
    assert body["memory_table"] == [
        {"quantization": "int8", "bytes": 100_000_000},
        {"quantization": "float16", "bytes": 200_000_000},
    ]
    for field in (
        "context_window",
        "embedding_dimension",
        "pooling",
        "query_prefix",
        "license",
        "sha256",
        "allow_patterns",
        "gguf_file",
        "tags",
        "ram_required",
    ):
        assert field in body


def test_unknown_model_is_404_with_code(superuser_client):
    response = superuser_client.get(f"{API}/models/no-such-model")
    assert response.status_code == 404
    assert response.json() == {
        "code": "ERR_NOT_FOUND",
        "message": "No model with key 'no-such-model'.",
        "details": {"model": "no-such-model"},
    }


def test_activate_installed_model_records_event(superuser_client, superuser, catalog):
    response = superuser_client.post(f"{API}/models/bge-small/activate")
    assert response.status_code == 200
    assert response.json()["model"] == "bge-small" and response.json()["type"] == "embedding"
    assert ActiveModel.objects.get(type="embedding").model.key == "bge-small"
    event = Event.objects.get(kind="switched")
    assert event.actor == superuser and event.model.key == "bge-small"
    active = superuser_client.get(f"{API}/active-models").json()
    assert [(a["type"], a["model"]) for a in active] == [("embedding", "bge-small")]
    detail = superuser_client.get(f"{API}/models/bge-small").json()
    assert detail["is_active"] is True


def test_switching_replaces_the_slot_and_names_the_previous(superuser_client, catalog):
    InstallationFactory(model=catalog["minilm"])
    superuser_client.post(f"{API}/models/bge-small/activate")
    superuser_client.post(f"{API}/models/minilm/activate")
    assert ActiveModel.objects.get(type="embedding").model.key == "minilm"
    event = Event.objects.filter(kind="switched").first()
    assert event.data["previous"] == "bge-small"


def test_activate_not_installed_is_refused(superuser_client, catalog):
    response = superuser_client.post(f"{API}/models/minilm/activate")
    assert response.status_code == 409
    assert response.json()["code"] == "ERR_NOT_INSTALLED"
    assert not ActiveModel.objects.exists()


def test_activate_for_another_type_is_incompatible(superuser_client, catalog):
    response = superuser_client.post(
        f"{API}/active-models",
        {"type": "llm", "model": "bge-small"},
        content_type="application/json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "ERR_INCOMPATIBLE"
    assert not ActiveModel.objects.exists()


def test_activate_unknown_type_is_422(superuser_client, catalog):
    response = superuser_client.post(
        f"{API}/active-models",
        {"type": "vision", "model": "bge-small"},
        content_type="application/json",
    )
    assert response.status_code == 422
    assert response.json()["code"] == "ERR_INVALID"


def test_malformed_json_is_422_not_500(superuser_client, catalog):
    response = superuser_client.post(
        f"{API}/active-models", "{not json", content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["code"] == "ERR_INVALID"
    assert response.json()["details"]["errors"][0]["loc"] == ["body"]


def test_active_choice_persists_in_the_database(superuser_client, catalog):
    superuser_client.post(f"{API}/models/bge-small/activate")
    # A new client (as after a restart) reads the same active model from the database.
    other = Client()
    other.force_login(UserFactory(is_superuser=True))
    assert other.get(f"{API}/active-models").json()[0]["model"] == "bge-small"


def test_cache_endpoint_figures(superuser_client, isolated_store):
    from models_app.services import store_reconcile
    from tests.hub_cache import write_partial, write_snapshot

    write_snapshot(isolated_store, "x/unmanaged", "c" * 40, {"model.safetensors": b"u" * 900})
    write_partial(isolated_store, "x/unmanaged", "d" * 64, 100)
    store_reconcile()
    body = superuser_client.get(f"{API}/cache").json()
    assert body["unmanaged_bytes"] == 900 and body["unmanaged_count"] == 1
    assert body["partial_bytes"] == 100 and body["total_bytes"] == 1000
    assert body["unmanaged_repos"][0]["repo_id"] == "x/unmanaged"
    assert body["free_disk_bytes"] > 0


def test_openapi_docs_are_served(superuser_client):
    assert superuser_client.get(f"{API}/openapi.json").status_code == 200
    assert superuser_client.get(f"{API}/docs").status_code == 200


def test_hf_token_never_appears_in_responses(settings, superuser_client, catalog):
    settings.HF_TOKEN = "hf_secret_value_for_test"
    for path in ("/models", "/models/bge-small", "/cache", "/active-models", "/openapi.json"):
        assert b"hf_secret_value_for_test" not in superuser_client.get(API + path).content


@pytest.mark.parametrize("n", [10, 1000])
def test_list_query_count_is_independent_of_size(superuser_client, django_assert_num_queries, n):
    models = ModelFactory.create_batch(n)
    for m in models[::3]:
        InstallationFactory(model=m)
    CollectionFactory(embedding_model=models[0])
    # session + user + count + page ids + page rows + the runtime heartbeats (the capacity
    # every row's hardware fit is measured against, read once)
    with django_assert_num_queries(6):
        response = superuser_client.get(f"{API}/models?page_size=200")
    assert len(response.json()["items"]) == min(n, 200)
    with django_assert_num_queries(6):
        superuser_client.get(f"{API}/models?search=model&status=installed&sort=-size")


def test_download_route_status_codes(superuser_client, catalog):
    first = superuser_client.post(f"{API}/models/minilm/download")
    assert first.status_code == 202
    body = first.json()
    assert body["status"] == "queued" and body["operation"]["state"] == "queued"
    again = superuser_client.post(f"{API}/models/minilm/download")
    assert again.status_code == 200
    assert again.json()["status"] == "active"
    assert again.json()["operation"]["id"] == body["operation"]["id"]
    installed = superuser_client.post(f"{API}/models/bge-small/download")
    assert installed.status_code == 200
    assert installed.json() == {
        "status": "installed", "message": "bge-small is already installed.", "operation": None,
    }  # fmt: skip
    assert superuser_client.post(f"{API}/models/nope/download").status_code == 404


def test_download_conflicting_with_another_operation_is_409_naming_it(superuser_client, catalog):
    delete = OperationFactory(model=catalog["gemma-q5"], kind="delete", state="running")
    response = superuser_client.post(f"{API}/models/gemma-q5/download")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "ERR_ALREADY_RUNNING"
    assert body["details"]["operation"] == delete.id and f"#{delete.id}" in body["message"]


def test_operation_fields(superuser_client, catalog):
    op = OperationFactory(
        model=catalog["qwen-q4"], state="running", bytes_done=250, bytes_total=1000,
        speed=50.0, eta_seconds=15,
    )  # fmt: skip
    body = superuser_client.get(f"{API}/operations/{op.id}").json()
    assert body["model"] == "qwen-q4" and body["percent"] == 25.0
    for field in ("state", "bytes_done", "bytes_total", "speed", "eta_seconds", "error_code",
                  "error_message", "heartbeat_at"):  # fmt: skip
        assert field in body
    listed = superuser_client.get(f"{API}/operations?state=active").json()
    assert {o["id"] for o in listed["items"]} == {
        op.id, Operation.objects.get(state="queued").id,
    }  # fmt: skip


def test_operation_errors(superuser_client, catalog):
    missing = superuser_client.get(f"{API}/operations/999999")
    assert (missing.status_code, missing.json()["code"]) == (404, "ERR_NOT_FOUND")
    queued = Operation.objects.get(state="queued")
    retry = superuser_client.post(f"{API}/operations/{queued.id}/retry")
    assert (retry.status_code, retry.json()["code"]) == (409, "ERR_INVALID_STATE")
    failed = Operation.objects.get(state="failed")
    cancel = superuser_client.post(f"{API}/operations/{failed.id}/cancel")
    assert (cancel.status_code, cancel.json()["code"]) == (409, "ERR_INVALID_STATE")


def test_operations_list_query_count(superuser_client, catalog, django_assert_num_queries):
    OperationFactory.create_batch(30, state="succeeded")
    with django_assert_num_queries(4):  # session, user, count, page
        assert superuser_client.get(f"{API}/operations?limit=100").status_code == 200
