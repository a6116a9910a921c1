"""Browser tests: Debian's chromium driven by Playwright against a live daphne + qcluster.

Never `playwright install`: the browser is the system one, found with `command -v chromium`.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client

from tests.factories import ModelFactory, UserFactory
from tests.processes import child_env, free_port, wait_for_url

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="session")
def chromium_path():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def live_system(hub, settings, isolated_store, transactional_db):
    """Start `manage.py run` (daphne + one qcluster worker) on the test database."""
    port = free_port()
    env = child_env(
        settings,
        DOWNLOAD_RETRY_ATTEMPTS="2",
        ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port)],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(f"{base}/admin/login/", timeout=60, proc=proc)
        yield base
    finally:
        # Also when it never answered: its own session would outlive the test run.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def browser(chromium_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop on this thread; the test's ORM calls are
    # still plain synchronous calls on one thread, which is what Django's guard protects.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_system, request):
    """A page signed in as a superuser (a real session cookie from the test database)."""
    admin = UserFactory(username="browser-admin", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(admin)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_system)
    context.add_cookies(
        [{"name": django_settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_system}]
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    context.close()


def shot(page, name: str) -> None:
    """Save a screenshot of the page in a named state as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def card(page, key):
    """Return the locator of a model's card on Settings > Models."""
    return page.locator(f'[data-model="{key}"]')


@pytest.fixture
def slow_embed():
    """An 8 MiB embedding entry on the test hub, slow enough to watch or cancel when throttled."""
    return ModelFactory(
        key="slow-embed", name="Slow embed", repo_id="acme/slow-embed", type="embedding",
        allow_patterns=["*.json", "*.safetensors"], download_size=8 * 1024 * 1024,
    )  # fmt: skip
