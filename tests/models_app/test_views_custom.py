"""The "+ Add custom" dialog on Settings > Models, and removing an entry from its card."""

import pytest

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

PAGE = "/settings/models/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_the_page_has_the_add_custom_button(superuser_client):
    html = superuser_client.get(PAGE).content.decode()
    assert 'data-testid="add-custom"' in html and 'hx-get="/settings/models/custom/"' in html


def test_the_dialog_has_the_fields_and_collapsed_advanced_options(superuser_client):
    html = superuser_client.get(f"{PAGE}custom/", **HTMX).content.decode()
    assert 'id="custom-dialog"' in html and "data-autoshow" in html
    for name in ("repo_id", "type", "revision", "dimension", "pooling", "query_prefix",
                 "document_prefix", "instruction"):  # fmt: skip
        assert f'name="{name}"' in html, name
    assert '<details class="custom-advanced" data-testid="custom-advanced">' in html  # closed
    assert "<!doctype" not in html  # the fragment, not the page


def test_the_dialog_is_a_page_without_javascript(superuser_client):
    html = superuser_client.get(f"{PAGE}custom/").content.decode()
    assert "<!doctype html>" in html and 'id="custom-dialog"' in html and " open" in html


def test_inspect_lists_the_gguf_files_with_sizes_to_choose(hub_custom, superuser_client):
    response = superuser_client.post(
        f"{PAGE}custom/inspect/", {"repo_id": LLM_REPO, "type": "embedding"}, **HTMX
    )
    html = response.content.decode()
    assert response.status_code == 200
    size = hub_custom.file_meta(LLM_REPO, "custom-llm-Q8_0.gguf").size
    assert 'value="custom-llm-Q8_0.gguf"' in html and f'data-bytes="{size}"' in html
    assert "Q4_K_M" in html
    assert '<option value="llm" selected>' in html  # the type the repo fits


def test_an_error_shows_inline_in_the_dialog_with_its_code(hub_custom, superuser_client):
    response = superuser_client.post(
        f"{PAGE}custom/inspect/", {"repo_id": GATED_REPO, "type": "llm"}, **HTMX
    )
    html = response.content.decode()
    assert response.status_code == 502 and response["X-Modelyard-Error"] == "ERR_AUTH"
    assert 'data-testid="custom-error" data-code="ERR_AUTH"' in html
    assert "Accept its terms" in html and f'value="{GATED_REPO}"' in html  # input kept


def test_add_redirects_to_the_list_where_it_is_not_installed(hub_custom, superuser_client):
    response = superuser_client.post(
        f"{PAGE}custom/add/",
        {"repo_id": LLM_REPO, "type": "llm", "files": ["custom-llm-Q4_K_M.gguf"]},
        **HTMX,
    )
    assert response.status_code == 200 and response["HX-Redirect"] == f"{PAGE}?type=llm"
    model = Model.objects.get()
    assert model.source == "custom"
    html = superuser_client.get(f"{PAGE}?type=llm").content.decode()
    card = html[html.index(f'data-model="{model.key}"') :]
    card = card[: card.index("</article>")]
    assert 'data-installed="false"' in html and 'data-testid="download"' in card
    assert 'data-testid="custom"' in card and 'data-testid="remove-custom"' in card
    assert "not installed yet" in html  # the toast


def test_a_wrong_type_is_refused_inline(hub_custom, superuser_client):
    response = superuser_client.post(
        f"{PAGE}custom/add/", {"repo_id": EMBED_REPO, "type": "llm"}, **HTMX
    )
    assert response.status_code == 409
    assert 'data-code="ERR_INCOMPATIBLE"' in response.content.decode()
    assert not Model.objects.exists()


def test_a_bad_dimension_is_refused_inline_and_opens_the_advanced_options(
    hub_custom, superuser_client
):
    response = superuser_client.post(
        f"{PAGE}custom/add/",
        {"repo_id": EMBED_REPO, "type": "embedding", "dimension": "many"},
        **HTMX,
    )
    html = response.content.decode()
    assert response.status_code == 422 and 'data-code="ERR_INVALID"' in html
    assert 'data-testid="custom-advanced" open' in html


def test_remove_takes_the_card_away(superuser_client):
    model = ModelFactory(source="custom")
    response = superuser_client.post(f"{PAGE}{model.key}/remove/", **HTMX)
    assert response.status_code == 200 and response.content == b""
    assert "Removed the entry" in response["HX-Trigger"]
    assert not Model.objects.filter(pk=model.pk).exists()


def test_remove_while_installed_shows_the_refusal_on_the_card(superuser_client):
    model = ModelFactory(source="custom")
    InstallationFactory(model=model)
    response = superuser_client.post(f"{PAGE}{model.key}/remove/", **HTMX)
    assert response.status_code == 409 and response["X-Modelyard-Error"] == "ERR_INVALID_STATE"
    assert "delete its files first" in response.content.decode()
    assert Model.objects.filter(pk=model.pk).exists()


def test_only_superusers(user_client):
    assert user_client.get(f"{PAGE}custom/").status_code == 403
    assert user_client.post(f"{PAGE}custom/add/", {"repo_id": LLM_REPO}).status_code == 403
