"""The OpenAPI spec says what the server does: error statuses, the input rule, nullability.

These read the spec the server serves; tests/test_api_contract.py checks it against the
live server with schemathesis.
"""

import re
from typing import Annotated, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticError

from models_app.api_contract import responses

pytestmark = pytest.mark.django_db

API = "/api/v1"
METHODS = ("get", "put", "post", "patch", "delete")
ERROR_REF = "#/components/schemas/ErrorOut"


@pytest.fixture(scope="module")
def spec(django_db_setup, django_db_blocker):
    from django.test import Client

    with django_db_blocker.unblock():
        return Client().get(f"{API}/openapi.json").json()


def operations(spec):
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def resolve(spec, schema):
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def leaves(spec, schema, where):
    """Yield (where, schema) for every scalar schema inside one, through refs and anyOf."""
    schema = resolve(spec, schema)
    for option in schema.get("anyOf", []):
        yield from leaves(spec, option, where)
    if schema.get("type") == "object":
        for name, prop in schema.get("properties", {}).items():
            yield from leaves(spec, prop, f"{where}.{name}")
    elif schema.get("type") == "array":
        yield from leaves(spec, schema["items"], f"{where}[]")
    elif "type" in schema or "enum" in schema:
        yield where, schema


def inputs(spec):
    for label, op in operations(spec):
        for param in op.get("parameters", []):
            yield from leaves(spec, param["schema"], f"{label} {param['in']}:{param['name']}")
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            yield from leaves(spec, body["schema"], f"{label} body")


def test_every_operation_documents_its_errors_with_the_error_schema(spec):
    for label, op in operations(spec):
        statuses = op["responses"]
        assert {"401", "403"} <= set(statuses), label
        for status, response in statuses.items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"]["$ref"] == ERROR_REF
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in statuses, f"{label} takes input but documents no 422"
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            assert "404" in statuses, f"{label} names a resource but documents no 404"


def test_the_error_schema_has_code_message_and_details(spec):
    error = spec["components"]["schemas"]["ErrorOut"]
    assert set(error["required"]) == {"code", "message", "details"}
    assert error["properties"]["details"]["type"] == "object"


def test_every_string_input_refuses_control_characters_and_has_a_length(spec):
    strings = [(where, s) for where, s in inputs(spec) if s.get("type") == "string"]
    assert len(strings) > 20
    for where, schema in strings:
        if "enum" in schema:
            continue
        assert "maxLength" in schema, where
        pattern = re.compile(schema["pattern"])
        for char in ("\x00", "\x1b", "\x7f", "\x85"):
            assert not pattern.search(f"a{char}b"), (where, repr(char))
        assert pattern.search("a b"), where


def test_every_integer_input_is_bounded(spec):
    for where, schema in inputs(spec):
        if schema.get("type") == "integer":
            assert "minimum" in schema and "maximum" in schema, where
            assert schema["maximum"] <= 2**63 - 1, where


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ("CollectionPatch", "name"),
        ("CollectionPatch", "description"),
        ("CollectionPatch", "embedding_model"),
        ("LLMConfigIn", "description"),
    ],
)
def test_a_field_that_may_be_left_out_but_not_null_is_not_nullable(spec, schema, field):
    prop = spec["components"]["schemas"][schema]["properties"][field]
    assert prop["type"] == "string" and "anyOf" not in prop, prop
    assert "default" not in prop, prop  # a default of null would be a null the server refuses
    assert field not in spec["components"]["schemas"][schema].get("required", [])


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ("CollectionPatch", "reranker_model"),
        ("CollectionPatch", "splade_model"),
        ("LLMConfigIn", "model"),
        ("PreferenceIn", "default_llm"),
    ],
)
def test_a_field_that_null_clears_is_nullable(spec, schema, field):
    prop = spec["components"]["schemas"][schema]["properties"][field]
    assert {"type": "null"} in prop["anyOf"], prop


def test_the_model_type_is_one_of_the_four(spec):
    prop = spec["components"]["schemas"]["ActivateIn"]["properties"]["type"]
    assert sorted(prop["enum"]) == ["embedding", "llm", "reranker", "splade"]


def test_every_body_refuses_fields_it_does_not_name(spec):
    for label, op in operations(spec):
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            assert resolve(spec, body["schema"])["additionalProperties"] is False, label


def test_the_response_helper_refuses_a_status_no_error_has():
    with pytest.raises(ValueError, match="418"):
        responses(dict, 418)
    assert set(responses(dict, 404)) == {200, 401, 403, 404}


def test_the_docs_page_loads_swagger_ui_from_our_static_files(client):
    html = client.get(f"{API}/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    # Every script and stylesheet is ours: no address leaves this host. (The page's CSRF
    # token is random text, so a plain "cdn" not in html failed once in CI.)
    addresses = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert addresses, "the docs page loads no script or stylesheet"
    assert [a for a in addresses if "//" in a or not a.startswith("/")] == []
    assert "https://" not in html and "//cdn" not in html.lower()  # nor in inline settings
    assert client.get("/static/ninja/swagger-ui-bundle.js").status_code == 200


def _bool_fields(model: type[BaseModel], where: str):
    """Yield (where, type) for each boolean field of a params model, nested models included."""
    for name, field in model.model_fields.items():
        members = get_args(field.annotation) if get_origin(field.annotation) else ()
        members = members or (field.annotation,)
        for member in members:
            inner = get_args(member)[0] if get_origin(member) is Annotated else member
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from _bool_fields(inner, f"{where}.{name}")
            elif inner is bool:
                metadata = field.metadata
                yield (
                    f"{where}.{name}",
                    Annotated[field.annotation, *metadata] if metadata else field.annotation,
                )


def test_every_boolean_input_is_strict():
    """The spec cannot say a boolean is strict: every operation's params models do."""
    from config.api import api

    found = []
    for _prefix, router in api._routers:  # every router added to the API, a later one too
        for path, path_view in router.path_operations.items():
            for op in path_view.operations:
                for model in op.models:
                    found += _bool_fields(model, f"{op.methods} {path}")
    assert len(found) >= 4, found  # recommended, confirm, pinned, dry_run
    for where, annotation in found:
        adapter = TypeAdapter(annotation)
        for value in ("yes", "1", 1, "on", "True"):
            with pytest.raises(PydanticError):
                adapter.validate_python(value)
                pytest.fail(f"{where} accepted {value!r}")
