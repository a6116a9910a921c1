"""The API's one input rule and its one error shape, on every route (SQLite and PostgreSQL).

Every string from a path, a query or a body is refused with 422 ERR_INVALID when it holds
a control character (a description may hold tab and newline) or is too long; integers are
bounded; booleans are strict. Every error reply under /api/ is {code, message, details},
the 404 of an unknown route, the 405 of a wrong method and unparseable JSON included.
"""

import json
from urllib.parse import quote

import pytest

from collections_app.models import Collection, LLMConfig, UserPreference
from models_app.models import Installation, Operation, UnmanagedRepo
from tests.factories import (
    CollectionFactory,
    InstallationFactory,
    LLMConfigFactory,
    ModelFactory,
    OperationFactory,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"
JSON = "application/json"
CONTROL = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\t", "\n", "\r"]


@pytest.fixture
def catalog():
    embed = ModelFactory(key="embed", type="embedding")
    llm = ModelFactory(key="llm", type="llm", allow_patterns=[])
    InstallationFactory(model=embed)
    CollectionFactory(name="docs", embedding_model=embed)
    LLMConfigFactory(name="high", model=llm)
    return {"embed": embed, "llm": llm, "op": OperationFactory(model=llm, state="failed")}


def request(client, method, path, body=None):
    if body is None:
        return getattr(client, method)(path)
    data = body if isinstance(body, str) else json.dumps(body)
    return getattr(client, method)(path, data=data, content_type=JSON)


def assert_invalid(response, *, field=None):
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "ERR_INVALID" and body["message"], body
    assert body["details"]["errors"], body
    if field is not None:
        assert any(e["loc"][-1] == field for e in body["details"]["errors"]), body


def nothing_written():
    return {
        "collections": list(Collection.objects.values_list("name", flat=True)),
        "configs": list(LLMConfig.objects.values_list("name", "description")),
        "preferences": UserPreference.objects.count(),
        "operations": Operation.objects.count(),
        "pinned": list(Installation.objects.values_list("pinned", flat=True)),
    }


# --- strings --------------------------------------------------------------------------------

PATH_ROUTES = [
    ("get", "/models/{}", None),
    ("get", "/models/{}/usage", None),
    ("post", "/models/{}/activate", None),
    ("post", "/models/{}/download", None),
    ("delete", "/models/{}", None),
    ("put", "/models/{}/pinned", {"pinned": True}),
    ("put", "/llm-configs/{}", {"description": "x"}),
    ("delete", "/llm-configs/{}", None),
]


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize(("method", "path", "body"), PATH_ROUTES)
def test_a_control_character_in_a_path_segment_is_422(
    superuser_client, catalog, method, path, body, char
):
    before = nothing_written()
    # Percent-encoded, as a client sends it: the test client (urllib) would drop a raw tab.
    response = request(superuser_client, method, API + path.format(quote(f"em{char}bed")), body)
    assert_invalid(response)
    assert nothing_written() == before


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\n"])
@pytest.mark.parametrize(
    "query", ["/models?search=a{}b", "/operations?model=a{}b"], ids=["search", "model"]
)
def test_a_control_character_in_a_query_parameter_is_422(superuser_client, catalog, query, char):
    assert_invalid(superuser_client.get(API + query.format(quote(char))))


BODY_STRINGS = [
    ("post", "/collections", {"name": "a{}b", "embedding_model": "embed"}, "name"),
    ("post", "/collections", {"name": "p", "embedding_model": "embed", "description": "{}"}, None),
    ("post", "/collections", {"name": "p", "embedding_model": "em{}bed"}, "embedding_model"),
    ("post", "/collections", {"name": "p", "embedding_model": "embed", "splade_model": "{}"}, None),
    ("patch", "/collections/{docs}", {"name": "{}"}, "name"),
    ("put", "/preferences", {"default_llm": "ll{}m"}, "default_llm"),
    ("put", "/llm-configs/high", {"model": "ll{}m"}, "model"),
    ("put", "/llm-configs/high", {"description": "low{}er"}, "description"),
    ("post", "/active-models", {"type": "embedding", "model": "em{}bed"}, "model"),
]


def _fill(value, char):
    if isinstance(value, dict):
        return {k: _fill(v, char) for k, v in value.items()}
    return value.replace("{}", char) if isinstance(value, str) else value


@pytest.mark.parametrize("char", ["\x00", "\x08", "\x1b", "\x7f", "\x9f"])
@pytest.mark.parametrize(("method", "path", "body", "field"), BODY_STRINGS)
def test_a_control_character_in_a_json_string_is_422_and_nothing_is_stored(
    superuser_client, catalog, method, path, body, field, char
):
    docs = Collection.objects.get(name="docs")
    before = nothing_written()
    url = API + path.replace("{docs}", str(docs.pk))
    assert_invalid(request(superuser_client, method, url, _fill(body, char)), field=field)
    assert nothing_written() == before


def test_a_lone_surrogate_in_a_json_string_is_422(superuser_client, catalog):
    # Valid JSON ("\\ud800"), but no text a database can encode.
    body = '{"name": "a\\ud800", "embedding_model": "embed"}'
    assert_invalid(request(superuser_client, "post", f"{API}/collections", body), field="name")
    assert Collection.objects.count() == 1


@pytest.mark.parametrize("char", ["\t", "\n", "\r"])
def test_a_name_refuses_tab_and_newline(superuser_client, catalog, char):
    body = {"name": f"two{char}lines", "embedding_model": "embed"}
    assert_invalid(request(superuser_client, "post", f"{API}/collections", body), field="name")


def test_a_description_is_free_text_with_tab_and_newline(superuser_client, catalog):
    text = "First line\r\n\tindented, then\nanother"
    body = {"name": "papers", "embedding_model": "embed", "description": text}
    response = request(superuser_client, "post", f"{API}/collections", body)
    assert response.status_code == 201, response.content
    assert Collection.objects.get(name="papers").description == text


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("get", "/models/" + "k" * 201, None, "key"),
        ("get", "/models?search=" + "s" * 201, None, "search"),
        ("get", "/operations?model=" + "m" * 201, None, "model"),
        ("put", "/llm-configs/" + "n" * 51, {}, "name"),
        ("post", "/collections", {"name": "n" * 201, "embedding_model": "embed"}, "name"),
        ("post", "/collections", {"name": "p", "embedding_model": "e" * 201}, "embedding_model"),
        (
            "post", "/collections",
            {"name": "p", "embedding_model": "embed", "description": "d" * 10_001},
            "description",
        ),
        ("put", "/preferences", {"default_reranker": "r" * 201}, "default_reranker"),
        ("patch", "/collections/{docs}", {"name": "   "}, "name"),  # blank once stripped
        ("put", "/llm-configs/%20%20", {}, "name"),
        ("post", "/active-models", {"type": "", "model": "embed"}, "type"),
    ],
)  # fmt: skip
def test_a_string_too_long_blank_or_off_its_list_is_422(
    superuser_client, catalog, method, path, body, field
):
    docs = Collection.objects.get(name="docs")
    before = nothing_written()
    url = API + path.replace("{docs}", str(docs.pk))
    assert_invalid(request(superuser_client, method, url, body), field=field)
    assert nothing_written() == before


# --- integers and booleans ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/models?page=99999999999999999999999", "page"),
        ("/models?page=1000001", "page"),
        ("/models?page=0", "page"),
        ("/models?page_size=201", "page_size"),
        ("/operations?limit=0", "limit"),
        ("/operations?limit=201", "limit"),
        ("/operations/99999999999999999999", "operation_id"),
        ("/operations/9223372036854775808", "operation_id"),
        ("/operations/0", "operation_id"),
        ("/collections/99999999999999999999", "collection_id"),
    ],
)
def test_integers_are_bounded(superuser_client, catalog, path, field):
    assert_invalid(superuser_client.get(API + path), field=field)


def test_the_largest_page_is_an_empty_page(superuser_client, catalog):
    response = superuser_client.get(f"{API}/models?page=1000000&page_size=200")
    assert response.status_code == 200
    assert response.json()["items"] == []


@pytest.mark.parametrize("value", ["yes", "1", 1, "true", None, "on"])
def test_a_json_boolean_is_strict(superuser_client, catalog, value):
    response = request(superuser_client, "put", f"{API}/models/embed/pinned", {"pinned": value})
    assert_invalid(response, field="pinned")
    assert not Installation.objects.get(model__key="embed").pinned
    response = request(superuser_client, "post", f"{API}/cache/prune", {"dry_run": value})
    assert_invalid(response, field="dry_run")


def test_a_json_boolean_is_accepted(superuser_client, catalog):
    response = request(superuser_client, "put", f"{API}/models/embed/pinned", {"pinned": True})
    assert response.status_code == 200
    assert response.json() == {"model": "embed", "pinned": True}


@pytest.mark.parametrize(
    "path", ["/models?recommended=yes", "/models?recommended=1", "/models/embed?confirm=on"]
)
def test_a_query_boolean_is_true_or_false(superuser_client, catalog, path):
    method = "delete" if "confirm" in path else "get"
    assert_invalid(getattr(superuser_client, method)(API + path))
    assert Operation.objects.filter(kind="delete").count() == 0


def test_a_query_boolean_true_filters(superuser_client, catalog):
    ModelFactory(key="starred", recommended=True)
    response = superuser_client.get(f"{API}/models?recommended=true")
    assert [m["key"] for m in response.json()["items"]] == ["starred"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/collections", {"name": "p", "embedding_model": "embed", "owner": "root"}),
        ("/active-models", {"type": "embedding", "model": "embed", "extra": 1}),
        ("/cache/prune", {"dry_run": True, "force": True}),
    ],
)
def test_a_body_field_the_schema_does_not_name_is_422(superuser_client, catalog, path, body):
    assert_invalid(request(superuser_client, "post", API + path, body))


# --- the error shape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/models/acme/tiny",
        "/api/v1/models/embed/nope",
        "/api/v1/models/",
        "/api/",
        "/api",
        "/api/v2/x",
    ],
)
def test_an_unknown_api_route_is_a_json_404(superuser_client, catalog, path):
    response = superuser_client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == JSON
    body = response.json()
    assert body["code"] == "ERR_NOT_FOUND" and body["details"] == {"path": path}


def test_an_unknown_api_route_is_a_json_404_for_anyone(anonymous_client):
    response = anonymous_client.post("/api/v1/models/a/b/download")
    assert response.status_code == 404 and response.json()["code"] == "ERR_NOT_FOUND"


@pytest.mark.parametrize("path", ["/no-such-page/", "/apiary/"])
def test_an_unknown_route_elsewhere_stays_an_html_404(superuser_client, path):
    response = superuser_client.get(path)
    assert response.status_code == 404
    assert not response["Content-Type"].startswith(JSON)


def test_a_crash_is_a_json_500_without_the_traceback(superuser, monkeypatch, caplog):
    from django.test import Client

    from models_app import selectors

    # A crash cannot be caused through the API on purpose (that is the point of the rule):
    # the one stand-in here is a selector that raises.
    def crash():
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "cache_summary", crash)
    client = Client(raise_request_exception=False)
    client.force_login(superuser)
    response = client.get(f"{API}/cache")
    assert response.status_code == 500
    assert response.json()["code"] == "ERR_INTERNAL"
    assert b"secret internals" not in response.content
    assert "secret internals" in caplog.text  # the log keeps the traceback


def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(superuser_client, catalog):
    response = superuser_client.patch(f"{API}/models/embed", data="{}", content_type=JSON)
    assert response.status_code == 405
    assert response.json() == {
        "code": "ERR_METHOD_NOT_ALLOWED",
        "message": "This route does not take PATCH; it takes DELETE, GET.",
        "details": {"method": "PATCH", "allowed": ["DELETE", "GET"]},
    }
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "DELETE"}


@pytest.mark.parametrize("body", ["{not json", '{"name": "p",}', "\xff\xfe", "[1, 2"])
def test_malformed_json_is_422_with_details(superuser_client, catalog, body):
    response = superuser_client.post(f"{API}/collections", data=body, content_type=JSON)
    assert_invalid(response)
    assert response.json()["details"]["errors"][0]["loc"] == ["body"]
    assert Collection.objects.count() == 1


def test_a_409_carries_details(superuser_client, catalog, isolated_store):
    response = request(superuser_client, "put", f"{API}/models/llm/pinned", {"pinned": True})
    assert response.status_code == 409
    assert response.json()["details"] == {"model": "llm"}
    repo = UnmanagedRepo.objects.create(
        repo_id="x/legacy", location="legacy", reconciled_at="2026-01-01T00:00:00Z"
    )
    response = superuser_client.delete(f"{API}/cache/unmanaged/{repo.pk}")
    assert response.status_code == 409
    assert response.json()["details"] == {"repo_id": "x/legacy", "location": "legacy"}


def test_every_error_body_has_details_even_when_empty(superuser_client, anonymous_client, catalog):
    for response in (
        anonymous_client.get(f"{API}/models"),
        superuser_client.get(f"{API}/operations/123456"),
        superuser_client.get(f"{API}/models/nope"),
    ):
        body = response.json()
        assert set(body) == {"code", "message", "details"}, body
        assert isinstance(body["details"], dict)
