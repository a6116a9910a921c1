"""The live page under a slow network: no update is lost while an answer is on its way.

Each test holds one answer in the browser's network (Playwright's routing stands for a slow
link; the server is the real one) while the server makes the change that the page must
still show. The hold is the slow network itself, not a wait that the assertions rely on:
the assertions wait for the page to show the truth.
"""

import pytest
from django.utils import timezone

from models_app import services
from models_app.models import Operation, ProcessHeartbeat, ProcessRole
from models_app.services.reconcile import store_reconcile
from tests.browser.conftest import card, shot
from tests.factories import ModelFactory
from tests.hub_cache import write_snapshot
from tests.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/settings/models/"
HOLD_MS = 600  # longer than the page's refresh delays (100-150 ms) and a round trip


def _installed(store, key, type):
    repo = f"acme/{key}"
    model = ModelFactory(key=key, name=key.title(), repo_id=repo, type=type,
                         allow_patterns=["*.safetensors"])  # fmt: skip
    write_snapshot(store, repo, "a" * 40, {"model.safetensors": b"r" * 1000})
    return model


def test_refreshes_of_different_parts_are_not_lost_behind_a_slow_answer(page, isolated_store):
    first = _installed(isolated_store, "race-first", "embedding")
    second = _installed(isolated_store, "race-second", "embedding")
    store_reconcile()
    page.goto(f"{PAGE}?q=race")
    page.wait_for_selector('[data-testid="live-status"][data-state="live"]')
    card(page, second.key).wait_for()

    def held(route):
        # While the first card's answer is on its way, the second card changes, then the
        # runtime panel: both must be fetched again. They once queued behind this answer,
        # the newer replacing the older, and the second card kept its old face.
        services.model_activate(model=second)
        page.wait_for_timeout(HOLD_MS // 2)  # the relay's look and the card's delay
        ProcessHeartbeat.objects.create(
            role=ProcessRole.RUNTIME, host="race-host", pid=1, started_at=timezone.now(),
            beat_at=timezone.now(),
        )  # fmt: skip
        page.wait_for_timeout(HOLD_MS)
        route.fulfill(response=route.fetch())

    page.route(f"**{PAGE}{first.key}/card/", held, times=1)
    services.model_activate(model=first)
    page.wait_for_selector(f'[data-model="{second.key}"][data-active="true"]')
    page.wait_for_selector(f'[data-model="{first.key}"][data-active="false"]')
    page.get_by_test_id("runtime-hosts").filter(has_text="race-host").wait_for()
    shot(page, "race-01-both-parts-refreshed")


def test_an_end_that_comes_while_the_cancel_answer_is_on_its_way_is_shown(page, hub, slow_embed):
    hub.add_fault("acme/slow-embed/model.safetensors", "throttle", bytes_per_sec=300_000)
    page.goto(f"{PAGE}?q=slow")
    page.wait_for_selector('[data-testid="live-status"][data-state="live"]')
    c = card(page, "slow-embed")
    c.get_by_test_id("download").click()
    c.get_by_test_id("percent").wait_for()

    def held(route):
        # The cancel reaches the server, the worker ends the download and the page hears
        # of it; only then does the answer (the card as it was: "Cancelling…") arrive.
        response = route.fetch()
        wait_until(
            lambda: Operation.objects.get(model=slow_embed).state == "cancelled",
            timeout=20,
            what="the download cancelled",
        )
        page.get_by_test_id("toast").filter(has_text="cancelled").wait_for()
        page.wait_for_timeout(HOLD_MS)
        route.fulfill(response=response)

    page.route(f"**{PAGE}operations/*/cancel/", held, times=1)
    c.get_by_test_id("cancel").click()
    # The card shows the end, though the answer it waited for was older than the end.
    card(page, "slow-embed").get_by_test_id("retry").wait_for(timeout=20_000)
    assert card(page, "slow-embed").get_attribute("data-operation-state") == "cancelled"
    shot(page, "race-02-cancelled-after-a-slow-answer")
