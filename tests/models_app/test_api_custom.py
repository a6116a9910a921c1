"""The custom-entries API: inspect, add, remove; one test per status path."""

import pytest

from models_app import services
from models_app.engine import operation_run
from models_app.models import Model
from tests.custom_hub import (  # noqa: F401 (fixtures)
    EMBED_REPO,
    GATED_REPO,
    LLM_REPO,
    custom_hub_fixture,
    hub_custom_fixture,
)
from tests.factories import InstallationFactory, ModelFactory

pytestmark = pytest.mark.django_db

API = "/api/v1"


def add(client, **body):
    return client.post(f"{API}/models/custom", body, content_type="application/json")


def test_inspect_lists_the_gguf_files(hub_custom, superuser_client):
    response = superuser_client.get(f"{API}/models/custom/inspect?repo_id={LLM_REPO}")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["pipeline_tag"] == "text-generation" and body["types"] == ["llm"]
    sizes = {f["path"]: f["size"] for f in body["gguf_files"]}
    assert (
        sizes["custom-llm-Q8_0.gguf"] == hub_custom.file_meta(LLM_REPO, "custom-llm-Q8_0.gguf").size
    )


def test_add_answers_201_and_the_entry_shows_as_not_installed(
    hub_custom, superuser_client, superuser
):
    response = add(superuser_client, repo_id=LLM_REPO, type="llm", file="custom-llm-Q4_K_M.gguf")
    assert response.status_code == 201, response.json()
    (entry,) = response.json()["models"]
    assert entry["key"] == "custom-llm-q4_k_m"
    assert (entry["installed"], entry["added_by"], entry["source"]) == (
        False, superuser.username, "custom",
    )  # fmt: skip
    assert entry["context_window"] == 2048 and entry["quantization"] == "Q4_K_M"
    detail = superuser_client.get(f"{API}/models/{entry['key']}").json()
    assert detail["installed"] is False and detail["source"] == "custom"
    listed = superuser_client.get(f"{API}/models?type=llm&status=available").json()["items"]
    assert entry["key"] in [row["key"] for row in listed]


def test_add_with_the_advanced_options(hub_custom, superuser_client):
    response = add(
        superuser_client, repo_id=EMBED_REPO, type="embedding", dimension=64, pooling="mean",
        query_prefix="query: ", document_prefix="passage: ", instruction="Represent this.",
        name="My embedder",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    (entry,) = response.json()["models"]
    assert (entry["embedding_dimension"], entry["pooling"], entry["name"]) == (
        64, "mean", "My embedder",
    )  # fmt: skip
    assert entry["options"] == {"instruction": "Represent this."}


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"repo_id": "acme/nothing-here", "type": "llm"}, 404, "ERR_NOT_FOUND"),
        ({"repo_id": "not a repo id", "type": "llm"}, 404, "ERR_NOT_FOUND"),
        ({"repo_id": GATED_REPO, "type": "llm"}, 502, "ERR_AUTH"),
        ({"repo_id": EMBED_REPO, "type": "llm"}, 409, "ERR_INCOMPATIBLE"),
        ({"repo_id": LLM_REPO, "type": "llm"}, 422, "ERR_INVALID"),  # which file?
        ({"repo_id": LLM_REPO, "type": "llm", "color": "red"}, 422, "ERR_INVALID"),
        ({"repo_id": LLM_REPO, "type": "llm", "dimension": 0}, 422, "ERR_INVALID"),
        ({"repo_id": LLM_REPO, "type": "llm", "file": None}, 422, "ERR_INVALID"),
    ],
    ids=["unknown", "malformed", "gated", "wrong-type", "choose", "extra", "dimension", "null"],
)
def test_add_refusals(hub_custom, superuser_client, body, status, code):
    response = add(superuser_client, **body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.json()
    assert not Model.objects.exists()


def test_a_gated_refusal_says_what_to_do(hub_custom, superuser_client):
    message = add(superuser_client, repo_id=GATED_REPO, type="llm").json()["message"]
    assert "Accept its terms" in message and "HF_TOKEN" in message


def test_a_duplicate_is_409_already_exists(hub_custom, superuser_client):
    add(superuser_client, repo_id=EMBED_REPO, type="embedding")
    response = add(superuser_client, repo_id=EMBED_REPO, type="embedding")
    assert (response.status_code, response.json()["code"]) == (409, "ERR_ALREADY_EXISTS")


def test_only_superusers(hub_custom, user_client, anonymous_client):
    assert add(user_client, repo_id=EMBED_REPO, type="embedding").status_code == 403
    assert add(anonymous_client, repo_id=EMBED_REPO, type="embedding").status_code == 401
    assert user_client.delete(f"{API}/models/custom/x").status_code == 403
    assert not Model.objects.exists()


def test_delete_a_not_installed_entry(hub_custom, superuser_client):
    key = add(superuser_client, repo_id=EMBED_REPO, type="embedding").json()["models"][0]["key"]
    response = superuser_client.delete(f"{API}/models/custom/{key}")
    assert response.status_code == 200 and response.json()["removed"] is True
    assert superuser_client.get(f"{API}/models/{key}").status_code == 404


def test_delete_is_refused_while_installed_unless_the_files_go(hub_custom, superuser_client):
    key = add(superuser_client, repo_id=EMBED_REPO, type="embedding").json()["models"][0]["key"]
    model = Model.objects.get(key=key)
    result = services.download_start(model=model)
    assert operation_run(operation_id=result.operation.id) == "succeeded"

    refused = superuser_client.delete(f"{API}/models/custom/{key}")
    assert (refused.status_code, refused.json()["code"]) == (409, "ERR_INVALID_STATE")
    assert "delete_files=true" in refused.json()["message"]

    done = superuser_client.delete(f"{API}/models/custom/{key}?delete_files=true")
    assert done.status_code == 200, done.json()
    assert done.json()["bytes_freed"] > 0
    assert not Model.objects.filter(key=key).exists()


def test_delete_refuses_a_curated_entry_and_an_unknown_key(superuser_client):
    curated = ModelFactory(key="curated-one")
    InstallationFactory(model=ModelFactory(key="other"))
    response = superuser_client.delete(f"{API}/models/custom/{curated.key}")
    assert (response.status_code, response.json()["code"]) == (409, "ERR_INVALID_STATE")
    assert superuser_client.delete(f"{API}/models/custom/no-such").status_code == 404
    assert Model.objects.filter(key="curated-one").exists()


def test_the_models_routes_still_answer_beside_the_custom_ones(superuser_client):
    ModelFactory(key="plain")
    assert superuser_client.get(f"{API}/models/plain").status_code == 200
    assert superuser_client.delete(f"{API}/models/plain").status_code == 200  # not installed
