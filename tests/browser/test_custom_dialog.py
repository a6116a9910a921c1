"""The "+ Add custom" dialog in a real browser, against live daphne and the custom hub."""

import pytest

from models_app.models import Model
from tests.browser.conftest import shot
from tests.custom_hub import (  # noqa: F401 (fixtures)
    GATED_REPO,
    LLM_REPO,
    custom_hub_fixture,
    hub_custom_fixture,
)

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/settings/models/"


def test_add_a_gguf_repo_from_the_dialog(hub, hub_custom, page):
    # `hub_custom` comes after `hub`: the live system's HF_ENDPOINT is the custom hub.
    page.goto(PAGE)
    # The page settled (its live snapshot applied), as test_runtime_page waits: once in CI
    # the click right after the load opened nothing within 15 s.
    page.wait_for_selector('[data-testid="live-status"][data-state="live"]')
    page.get_by_test_id("add-custom").click()
    dialog = page.get_by_test_id("custom-dialog")
    dialog.wait_for()
    assert not dialog.get_by_test_id("custom-advanced").evaluate("d => d.open")

    dialog.get_by_test_id("custom-repo-id").fill(GATED_REPO)
    dialog.get_by_test_id("custom-inspect").click()
    error = page.get_by_test_id("custom-error")
    error.wait_for()
    assert error.get_attribute("data-code") == "ERR_AUTH" and "HF_TOKEN" in error.inner_text()
    shot(page, "custom-01-gated")

    dialog = page.get_by_test_id("custom-dialog")
    dialog.get_by_test_id("custom-repo-id").fill(LLM_REPO)
    dialog.get_by_test_id("custom-inspect").click()
    page.get_by_test_id("custom-files").wait_for()
    files = page.get_by_test_id("custom-file")
    assert files.count() == 2
    page.locator('input[value="custom-llm-Q4_K_M.gguf"]').check()
    shot(page, "custom-02-files")
    page.get_by_test_id("custom-submit").click()

    card = page.locator('[data-model="custom-llm-q4_k_m"]')
    card.wait_for()
    assert card.get_attribute("data-installed") == "false"
    card.get_by_test_id("download").wait_for()
    page.get_by_test_id("toast").filter(has_text="not installed yet").first.wait_for()
    shot(page, "custom-03-added")
    assert Model.objects.get(key="custom-llm-q4_k_m").source == "custom"
