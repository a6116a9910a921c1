"""The runtime on Settings > Models in a real browser: the real Gemma 3 270M GGUF, loaded by a
real runtime supervisor (`manage.py runtime`), chatted with through daphne's /v1 proxy.

`manage.py run` serves the page (daphne, a qcluster) without a runtime of its own; the
runtime supervisor is a process of its own standing for host `test-host`.
"""

import re

import pytest

from models_app.models import Installation, RuntimeInstance
from tests.browser.conftest import shot
from tests.factories import ModelFactory
from tests.gemma import gemma_file  # noqa: F401  (a fixture)
from tests.processes import wait_until
from tests.runtime_helpers import RuntimeProcess, install_gguf, wait_gone

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.runtime]

PAGE = "/settings/models/"
KEY = "gemma-3-270m-q4_k_m"


@pytest.fixture
def no_runtime_in_run(monkeypatch):
    """Start `manage.py run` without its runtime child: the test's supervisor is the one."""
    monkeypatch.setenv("RUNTIME_ENABLED", "false")


@pytest.fixture
def gemma(settings, gemma_file):  # noqa: F811
    model = ModelFactory(
        key=KEY, repo_id="test/gemma-3-270m-GGUF", type="llm", name="Gemma 3 270M",
        gguf_file="gemma-3-270m-q4_k_m.gguf", allow_patterns=[], context_window=32768,
    )  # fmt: skip
    install_gguf(model, gemma_file, settings.MODELS_HUB_DIR)
    assert Installation.objects.filter(model=model).exists()
    return model


@pytest.fixture
def runtime(settings):
    process = RuntimeProcess(settings).start()
    yield process
    process.stop()


def card(page):
    return page.locator(f'article[data-model="{KEY}"]')


def panel_row(page):
    return page.locator(f'#runtime-panel tr[data-instance-model="{KEY}"]')


def watch_reply(page) -> None:
    """Count the changes to the Try it transcript from now on (one per token streamed)."""
    page.evaluate(
        """() => {
            window.__replyChanges = 0;
            const box = document.querySelector('[data-testid=try-output]');
            new MutationObserver((records) => { window.__replyChanges += records.length; })
                .observe(box, {childList: true, subtree: true, characterData: true});
        }"""
    )


def test_load_try_a_streamed_completion_and_unload(no_runtime_in_run, gemma, runtime, page):
    page.goto(f"{PAGE}?type=llm&q=gemma")
    page.wait_for_selector('[data-testid="live-status"][data-state="live"]')
    panel = page.get_by_test_id("runtime-panel")
    assert "test-host" in panel.get_by_test_id("runtime-hosts").inner_text()
    panel.get_by_test_id("runtime-empty").wait_for()
    shot(page, "runtime-01-installed-not-loaded")

    # Load from the card: the panel shows it ready, the card turns loaded, without a reload.
    card(page).get_by_test_id("load").click()
    page.get_by_test_id("toast").filter(has_text="Load of Gemma 3 270M queued.").wait_for()
    page.wait_for_selector(
        f'#runtime-panel tr[data-instance-model="{KEY}"][data-state="ready"]', timeout=60_000
    )
    row = panel_row(page)
    assert "test-host" in row.inner_text()
    memory = row.get_by_test_id("runtime-memory").inner_text()
    assert re.search(r"\d+(\.\d)?\xa0MB / \d+(\.\d)?\xa0MB", memory), memory
    assert row.get_by_test_id("runtime-expires").inner_text().startswith("in ")
    card(page).get_by_test_id("unload").wait_for()
    card(page).get_by_test_id("loaded").wait_for()
    page.get_by_test_id("toast").filter(has_text="Gemma 3 270M is loaded.").wait_for()
    shot(page, "runtime-02-loaded")

    # Try it: a chat first. The file is a base model: the reply ends at once, empty, and
    # the box says so as a note, not as an error.
    card(page).get_by_test_id("try-it").click()
    dialog = page.get_by_test_id("try-dialog")
    dialog.wait_for()
    assert "Loaded on test-host" in dialog.get_by_test_id("try-where").inner_text()
    dialog.get_by_test_id("try-prompt").fill("What is the capital of France?")
    dialog.get_by_test_id("try-max-tokens").fill("16")
    dialog.get_by_test_id("try-send").click()
    dialog.get_by_test_id("try-finish").filter(has_text=re.compile(r"^(stop|length)$")).wait_for(
        timeout=60_000
    )
    reply = dialog.locator('[data-testid="try-reply"]').last
    if not reply.inner_text().strip():
        note = dialog.get_by_test_id("try-note")
        assert note.is_visible() and "ended its reply at once" in note.inner_text()
        assert dialog.get_by_test_id("try-error").is_hidden()
        shot(page, "runtime-03-chat-empty-reply-note")

    # A plain completion streams its tokens into the page as they come.
    dialog.get_by_test_id("try-mode-completion").check(force=True)
    dialog.get_by_test_id("try-prompt").fill("The capital of France is")
    dialog.get_by_test_id("try-max-tokens").fill("24")
    watch_reply(page)
    dialog.get_by_test_id("try-send").click()
    dialog.get_by_test_id("try-finish").filter(has_text=re.compile(r"^(stop|length)$")).wait_for(
        timeout=60_000
    )
    text = dialog.get_by_test_id("try-reply").last.inner_text()
    tokens = int(dialog.get_by_test_id("try-tokens").inner_text())
    assert text.strip() and tokens >= 2
    # One change of the transcript per token (and one for the reply's start): they came
    # one by one, not as a single answer at the end.
    assert page.evaluate("window.__replyChanges") >= tokens
    assert float(dialog.get_by_test_id("try-rate").inner_text()) > 0
    assert dialog.get_by_test_id("try-ttft").inner_text().endswith(" ms")
    assert dialog.get_by_test_id("try-error").is_hidden()
    shot(page, "runtime-04-completion-streamed")

    # The requests were counted on the instance; the panel follows live.
    page.wait_for_function(
        f"""() => {{
            const el = document.querySelector(
                '#runtime-panel tr[data-instance-model="{KEY}"] [data-testid=runtime-requests]');
            return el && Number(el.textContent) >= 2;
        }}"""
    )
    # ... and ended: none is in flight once the streams closed.
    row.locator('[data-field="in_flight"]').filter(has_text=re.compile(r"^0$")).wait_for()
    dialog.locator("[data-dialog-close]").first.click()

    # Unload from the panel: the runner stops, the panel empties, the card offers Load.
    # The answer comes late (a slow link): the runner stops and the page hears of it
    # first. A live refresh of the panel once replaced the form that asked, and the
    # answer's toast, raised on that form, reached no one.
    def held(route):
        response = route.fetch()
        wait_until(
            lambda: not RuntimeInstance.objects.filter(model=gemma).exists(),
            timeout=30,
            what="the runner stopped",
        )
        page.wait_for_timeout(600)  # the relay's look and the panel's delay, on the slow link
        route.fulfill(response=response)

    page.route(f"**{PAGE}{KEY}/unload/", held, times=1)
    panel_row(page).get_by_test_id("runtime-unload").click()
    page.get_by_test_id("toast").filter(has_text="Unload of Gemma 3 270M queued.").wait_for()
    panel.get_by_test_id("runtime-empty").wait_for(timeout=30_000)
    card(page).get_by_test_id("load").wait_for()
    shot(page, "runtime-05-unloaded")
    wait_gone(gemma)
    assert not RuntimeInstance.objects.filter(model=gemma).exists()
    wait_until(
        lambda: runtime.proc.poll() is None, timeout=1, what="the runtime supervisor still up"
    )


@pytest.fixture
def gemma_as_embedding(settings, gemma_file):  # noqa: F811
    """The Gemma file as an embedding entry: its runner starts for embeddings."""
    model = ModelFactory(
        key="gemma-embed", repo_id="test/gemma-embed-GGUF", type="embedding",
        name="Gemma as embedder", gguf_file="gemma-3-270m-q4_k_m.gguf", allow_patterns=[],
        context_window=32768,
    )  # fmt: skip
    install_gguf(model, gemma_file, settings.MODELS_HUB_DIR)
    return model


def test_try_an_embedding_model_shows_the_cosine_similarity(
    no_runtime_in_run, gemma_as_embedding, runtime, page
):
    page.goto(f"{PAGE}?type=embedding&q=gemma")
    c = page.locator('article[data-model="gemma-embed"]')
    # Not loaded: Try it loads it on the first request (JIT), and says how long that took.
    c.get_by_test_id("try-it").click()
    dialog = page.get_by_test_id("try-dialog")
    dialog.wait_for()
    assert "Not loaded" in dialog.get_by_test_id("try-where").inner_text()
    dialog.get_by_test_id("try-text-a").fill("The cat sat on the mat.")
    dialog.get_by_test_id("try-text-b").fill("A cat was sitting on a rug.")
    dialog.get_by_test_id("try-send").click()
    dialog.get_by_test_id("try-result").wait_for(timeout=90_000)
    value = float(dialog.get_by_test_id("try-similarity").inner_text())
    assert -1.0 <= value <= 1.0
    assert int(dialog.locator('[data-stat="dimensions"]').inner_text()) > 0
    assert dialog.locator('[data-stat="load"]').inner_text().startswith("loaded for this request")
    assert dialog.get_by_test_id("try-error").is_hidden()
    shot(page, "runtime-06-embedding-similarity")
    # The JIT load shows in the panel, live.
    page.wait_for_selector(
        '#runtime-panel tr[data-instance-model="gemma-embed"][data-state="ready"]'
    )
