"""The admin adds custom entries through the service (checked against the hub) and removes them."""

import pytest

from models_app.models import Model
from tests.custom_hub import (  # noqa: F401 (fixtures)
    EMBED_REPO,
    LLM_REPO,
    custom_hub_fixture,
    hub_custom_fixture,
)
from tests.factories import InstallationFactory, ModelFactory

pytestmark = pytest.mark.django_db

ADD = "/admin/models_app/model/add/"


def form(**values):
    data = {
        "repo_id": "", "type": "llm", "revision": "main", "gguf_file": "", "name": "",
        "embedding_dimension": "", "pooling": "", "query_prefix": "", "document_prefix": "",
        "instruction": "",
    }  # fmt: skip
    return data | values


def test_the_add_form_saves_through_the_hub_check(hub_custom, superuser_client, superuser):
    response = superuser_client.post(
        ADD, form(repo_id=LLM_REPO, gguf_file="custom-llm-Q8_0.gguf", instruction="Be brief.")
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    model = Model.objects.get()
    assert (model.source, model.added_by, model.key) == ("custom", superuser, "custom-llm-q8_0")
    assert model.quantization == "Q8_0" and model.context_window == 2048
    assert model.options == {"instruction": "Be brief."}
    assert response["Location"] == "/admin/models_app/model/"


def test_a_refusal_shows_on_the_form(hub_custom, superuser_client):
    response = superuser_client.post(ADD, form(repo_id=EMBED_REPO, type="llm"))
    assert response.status_code == 200
    assert "ERR_INCOMPATIBLE" in response.content.decode()
    assert not Model.objects.exists()


def test_the_list_shows_who_added_a_custom_entry(superuser_client, superuser):
    ModelFactory(key="mine", source="custom", added_by=superuser)
    html = superuser_client.get("/admin/models_app/model/?source=custom").content.decode()
    assert "mine" in html and superuser.username in html


def test_a_custom_entry_keeps_what_the_hub_check_decided(superuser_client):
    model = ModelFactory(source="custom")
    html = superuser_client.get(f"/admin/models_app/model/{model.pk}/change/").content.decode()
    assert 'name="repo_id"' not in html and 'name="name"' in html


def test_delete_goes_through_the_service_and_is_refused_while_installed(superuser_client):
    model = ModelFactory(source="custom")
    url = f"/admin/models_app/model/{model.pk}/delete/"
    response = superuser_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Model.objects.filter(pk=model.pk).exists()
    from models_app.models import Event

    assert Event.objects.filter(kind="removed").exists()  # the service's event

    installed = ModelFactory(source="custom")
    InstallationFactory(model=installed)
    url = f"/admin/models_app/model/{installed.pk}/delete/"
    assert superuser_client.post(url, {"post": "yes"}).status_code == 403
    assert Model.objects.filter(pk=installed.pk).exists()
