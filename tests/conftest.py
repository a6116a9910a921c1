"""Shared fixtures: personas, an isolated models store per test, API clients."""

import pytest
from django.test import Client

from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def isolated_store(settings, tmp_path):
    """Point the store at a fresh directory and hide the real ~/.cache from every test."""
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODELS_HUB_DIR = tmp_path / "models" / "hub"
    settings.LEGACY_HUB_DIR = tmp_path / "legacy-hub-absent"
    settings.MODEL_REGISTRY_FILES = []
    settings.HF_TOKEN = None
    return settings.MODELS_HUB_DIR


@pytest.fixture
def superuser(db):
    return UserFactory(is_superuser=True, is_staff=True, username="root")


@pytest.fixture
def user(db):
    return UserFactory(is_staff=True, username="staff")


@pytest.fixture
def anonymous_client():
    return Client()


@pytest.fixture
def superuser_client(superuser):
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def user_client(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser_token(superuser):
    from models_app.services import api_token_create

    return api_token_create(user=superuser, name="test")[1]


@pytest.fixture
def token_client(superuser_token):
    return Client(headers={"Authorization": f"Bearer {superuser_token}"})


@pytest.fixture(
    params=["anonymous", "user", "superuser", "token", "user_token", "bad_token"],
)
def persona(request, db):
    """Return (name, client, expected outcome) for the API auth matrix."""
    from models_app.services import api_token_create

    name = request.param
    if name == "anonymous":
        return name, Client(), 401
    if name == "bad_token":
        return name, Client(headers={"Authorization": "Bearer myd_not-a-token"}), 401
    if name in ("user", "user_token"):
        u = UserFactory(is_staff=True)
        status = 403
    else:
        u = UserFactory(is_superuser=True, is_staff=True)
        status = None
    if name.endswith("token"):
        raw = api_token_create(user=u, name="t")[1]
        return name, Client(headers={"Authorization": f"Bearer {raw}"}), status
    client = Client(enforce_csrf_checks=False)
    client.force_login(u)
    return name, client, status
