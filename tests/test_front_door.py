"""What a new user meets first: the root URL, and a quiet start without a `.env` file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_settings(**env) -> subprocess.CompletedProcess:
    child = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    child.pop("PORT", None)
    # Logging is on at INFO before the settings load, as in a daphne process (its command
    # line configures logging first): whatever loading the settings logs shows.
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "import django\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        "print(settings.PORT)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=child, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip


@pytest.mark.django_db
def test_the_root_leads_to_the_models_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/settings/models/"
    # A stranger is then sent to sign in, and comes back to the Models page.
    follow = client.get(response["Location"])
    assert follow["Location"] == "/admin/login/?next=/settings/models/"


def test_a_missing_env_file_is_silent(tmp_path):
    done = _load_settings(ENV_FILE=str(tmp_path / "absent.env"))
    assert "environ" not in done.stderr and "not found" not in done.stderr, done.stderr
    assert done.stdout.strip() == "8000"


def test_the_default_env_file_is_silent_when_absent(tmp_path):
    if (ROOT / ".env").exists():
        pytest.skip("this checkout has a .env file")
    done = _load_settings()
    assert "environ" not in done.stderr, done.stderr


def test_an_env_file_is_read_when_present(tmp_path):
    env_file = tmp_path / "modelyard.env"
    env_file.write_text("PORT=8123\n")
    done = _load_settings(ENV_FILE=str(env_file))
    assert done.stdout.strip() == "8123"
