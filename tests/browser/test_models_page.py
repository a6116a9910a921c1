"""Settings > Models in a real browser, against live daphne + qcluster + the hub server."""

import re

import pytest

from models_app import services
from models_app.models import Installation, Operation
from models_app.services.reconcile import store_reconcile
from tests.browser.conftest import card, shot
from tests.factories import CollectionFactory, ModelFactory
from tests.hub_cache import write_snapshot
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/settings/models/"


def percent_above(key: str, value: float) -> str:
    """Return a JS predicate: the card's percent is above a value (or the bar is gone)."""
    return f"""() => {{
        const el = document.querySelector('[data-model="{key}"] [data-testid=percent]');
        return !el || parseFloat(el.textContent) > {value};
    }}"""


def percent(page, key) -> float:
    text = card(page, key).get_by_test_id("percent").inner_text()
    return float(re.sub(r"[^0-9.]", "", text) or 0)


def open_card(page, key, search):
    page.goto(f"{PAGE}?q={search}")
    c = card(page, key)
    c.wait_for()
    return c


def test_download_bar_moves_and_ends_installed_without_reload(page, hub, slow_embed):
    hub.add_fault("acme/slow-embed/model.safetensors", "throttle", bytes_per_sec=1_500_000)
    c = open_card(page, "slow-embed", "slow")
    shot(page, "01-available")
    c.get_by_test_id("download").click()
    c.get_by_test_id("progress").wait_for()
    c.get_by_test_id("percent").wait_for()
    page.wait_for_function(percent_above("slow-embed", 5))
    first = percent(page, "slow-embed")
    shot(page, "02-downloading")
    page.wait_for_function(percent_above("slow-embed", first))
    card(page, "slow-embed").get_by_test_id("delete").wait_for(timeout=30_000)
    assert "Installed" in card(page, "slow-embed").get_by_test_id("status").inner_text()
    page.get_by_test_id("toast").filter(has_text="completed").first.wait_for()
    shot(page, "03-installed")
    assert Installation.objects.filter(model=slow_embed).exists()


def test_reload_mid_download_shows_progress_again(page, hub, slow_embed):
    hub.add_fault("acme/slow-embed/model.safetensors", "throttle", bytes_per_sec=800_000)
    c = open_card(page, "slow-embed", "slow")
    c.get_by_test_id("download").click()
    c.get_by_test_id("percent").wait_for()
    page.wait_for_function(percent_above("slow-embed", 3))
    page.reload()
    c = card(page, "slow-embed")
    c.get_by_test_id("progress").wait_for()
    before = percent(page, "slow-embed")
    assert before > 0
    shot(page, "04-reloaded-mid-download")
    page.wait_for_function(percent_above("slow-embed", before))


def test_cancel_stops_the_download(page, hub, slow_embed):
    hub.add_fault("acme/slow-embed/model.safetensors", "throttle", bytes_per_sec=500_000)
    c = open_card(page, "slow-embed", "slow")
    c.get_by_test_id("download").click()
    c.get_by_test_id("cancel").click()
    card(page, "slow-embed").get_by_test_id("retry").wait_for(timeout=20_000)
    shot(page, "05-cancelled")
    op = Operation.objects.get(model=slow_embed)
    assert op.state == "cancelled"


def test_cancel_and_discard_removes_the_partial_files(page, hub, slow_embed, isolated_store):
    # Every request slow (a retried one too, on a busy machine): the file never completes.
    hub.add_fault(
        "acme/slow-embed/model.safetensors", "throttle", bytes_per_sec=500_000, times=None
    )
    c = open_card(page, "slow-embed", "slow")
    c.get_by_test_id("download").click()
    blobs = isolated_store / "models--acme--slow-embed" / "blobs"
    wait_until(
        lambda: sum(p.stat().st_size for p in blobs.glob("*.incomplete")) > 300_000,
        timeout=20,
        what="a partial file of 300 kB",
    )
    shot(page, "05a-downloading-cancel-or-discard")
    card(page, "slow-embed").get_by_test_id("cancel-discard").click()
    card(page, "slow-embed").get_by_test_id("retry").wait_for(timeout=20_000)
    shot(page, "05b-cancelled-and-discarded")
    op = Operation.objects.get(model=slow_embed)
    assert op.state == "cancelled" and "discarded" in op.error_message
    assert not list(blobs.glob("*.incomplete*"))
    # Nothing is left to discard: the card offers Retry only.
    assert card(page, "slow-embed").get_by_test_id("discard").count() == 0


def test_failure_shows_retry_and_the_message(page, hub, slow_embed):
    hub.add_fault("acme/slow-embed/model.safetensors", "status", code=404, times=None)
    c = open_card(page, "slow-embed", "slow")
    c.get_by_test_id("download").click()
    error = card(page, "slow-embed").get_by_test_id("error")
    error.wait_for(timeout=20_000)
    assert "ERR_NOT_FOUND" in card(page, "slow-embed").inner_text()
    card(page, "slow-embed").get_by_test_id("retry").wait_for()
    page.get_by_test_id("toast").filter(has_text="failed").first.wait_for()
    shot(page, "06-failed-with-retry")


@pytest.fixture
def installed_embed(isolated_store):
    model = ModelFactory(key="ready-embed", name="Ready embed", repo_id="acme/ready",
                         allow_patterns=["*.safetensors"])  # fmt: skip
    write_snapshot(isolated_store, "acme/ready", "a" * 40, {"model.safetensors": b"r" * 50_000})
    store_reconcile()
    return model


def test_delete_blocked_by_a_collection_names_it(page, installed_embed):
    CollectionFactory(name="research-papers", embedding_model=installed_embed)
    c = open_card(page, "ready-embed", "ready")
    assert "research-papers" in c.inner_text()
    c.get_by_test_id("in-use").wait_for()
    page.goto(f"{PAGE}ready-embed/delete/")
    assert "research-papers" in page.get_by_test_id("blocked").inner_text()
    assert page.get_by_test_id("confirm-delete").count() == 0
    shot(page, "07-delete-blocked")


def test_delete_with_warnings_needs_confirmation(page, installed_embed):
    services.model_activate(model=installed_embed)
    c = open_card(page, "ready-embed", "ready")
    c.get_by_test_id("delete").click()
    dialog = page.get_by_test_id("delete-dialog")
    dialog.wait_for()
    assert "active embedding model" in dialog.get_by_test_id("warnings").inner_text()
    assert "cannot be undone" in dialog.inner_text()
    assert not Operation.objects.filter(kind="delete").exists()
    shot(page, "08-delete-dialog")
    dialog.get_by_test_id("confirm-delete").click()
    card(page, "ready-embed").get_by_test_id("download").wait_for(timeout=20_000)
    shot(page, "09-deleted")
    assert not Installation.objects.filter(model=installed_embed).exists()


def test_tabs_and_search(page, slow_embed):
    ModelFactory(key="tab-llm", name="Tabby LLM", type="llm", gguf_file="t.gguf", allow_patterns=[])
    page.goto(PAGE)
    page.get_by_test_id("tab-llm").click()
    page.wait_for_url(re.compile(r"type=llm"))
    card(page, "tab-llm").wait_for()
    assert card(page, "slow-embed").count() == 0
    page.get_by_test_id("tab-embedding").click()
    page.get_by_test_id("search").fill("slow emb")
    card(page, "slow-embed").wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=model-list] [data-model]').length === 1"
    )
    shot(page, "10-search")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "11-phone")
