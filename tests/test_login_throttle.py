"""The admin login is throttled (django-axes): per username and client address, from the DB."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.db.models import F
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
LOGIN = "/admin/login/"
PASSWORD = "pw-for-tests"  # every UserFactory user's (tests/factories.py)
ATTACKER = "203.0.113.7"


@pytest.fixture
def limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = timedelta(minutes=15)
    return 3


@pytest.fixture
def root(superuser):
    assert superuser.username == "root" and superuser.check_password(PASSWORD)
    return superuser


def login(password: str, *, address: str = ATTACKER, username: str = "root"):
    client = Client(REMOTE_ADDR=address)
    response = client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"})
    signed_in = django_settings.SESSION_COOKIE_NAME in client.cookies and (
        client.get("/admin/").status_code == 200
    )
    return response, signed_in


def pass_the_cooloff():
    """Age the recorded attempts past the cool-off instead of sleeping through it."""
    AccessAttempt.objects.update(
        attempt_time=F("attempt_time") - django_settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )


def test_the_limit_and_cooloff_come_from_the_environment():
    env = {**os.environ, "LOGIN_FAILURE_LIMIT": "7", "LOGIN_COOLOFF": "60"}
    env.pop("ENV_FILE", None)
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.AXES_FAILURE_LIMIT, int(s.AXES_COOLOFF_TIME.total_seconds()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"}, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["7", "60"]


def test_wrong_passwords_lock_the_account_from_that_address(root, limit):
    for _ in range(limit - 1):
        response, signed_in = login("guess")
        assert response.status_code == 200 and not signed_in  # the form again, with its error
    response, _ = login("guess")
    assert response.status_code == 429
    # Locked: the right password is refused too, and no session is made.
    response, signed_in = login(PASSWORD)
    assert response.status_code == 429 and not signed_in
    assert b"too many login attempts" in response.content
    # The same account from another address, and another account here, still sign in.
    assert login(PASSWORD, address="198.51.100.20")[1]
    UserFactory(username="other", is_staff=True)
    assert login(PASSWORD, username="other")[1]


def test_after_the_cooloff_the_right_password_signs_in(root, limit):
    for _ in range(limit):
        login("guess")
    assert login(PASSWORD)[0].status_code == 429
    pass_the_cooloff()
    response, signed_in = login(PASSWORD)
    assert response.status_code == 302 and signed_in


def test_a_success_resets_the_count(root, limit):
    for _ in range(limit - 1):
        login("guess")
    assert login(PASSWORD)[1]
    # Without the reset these would be failures limit .. 2 * limit - 2: a lockout.
    for _ in range(limit - 1):
        assert login("guess")[0].status_code == 200
    assert login(PASSWORD)[1]


def test_api_tokens_are_not_throttled(root, limit, superuser_token):
    for _ in range(limit):
        login("guess", address="127.0.0.1")
    assert login(PASSWORD, address="127.0.0.1")[0].status_code == 429
    api = Client(headers={"Authorization": f"Bearer {superuser_token}"})
    assert api.get("/api/v1/models").status_code == 200
