"""Shared fixtures: personas, an isolated models store per test, API clients."""

import subprocess

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


# --- the hub test server ----------------------------------------------------------------

HUB_REPOS = {
    "acme/tiny-embed": {
        "config.json": b'{"hidden_size": 32, "model_type": "bert"}',
        "tokenizer.json": b'{"version": "1.0"}',
        "model.safetensors": 3 * 1024 * 1024,
        "1_Pooling/config.json": b'{"pooling_mode_cls_token": true}',
        "README.md": b"# tiny-embed: not part of the allow-patterns",
    },
    "acme/tiny-llm-GGUF": {
        "tiny-q4_k_m.gguf": 4 * 1024 * 1024,
        "tiny-q5_k_m.gguf": 5 * 1024 * 1024,
    },
    "acme/slow-embed": {
        "config.json": b'{"hidden_size": 64}',
        "model.safetensors": 8 * 1024 * 1024,
    },
}


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """A real HTTP hub on 127.0.0.1 serving the repos above."""
    from tests.hub_server import HubServer, make_repo

    root = tmp_path_factory.mktemp("hub-repos")
    for repo_id, files in HUB_REPOS.items():
        make_repo(root, repo_id, files)
    server = HubServer(root).start()
    server.warm()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server, settings):
    """The hub server, with HF_ENDPOINT pointing at it and fast retries; faults reset after."""
    settings.HF_ENDPOINT = hub_server.url
    settings.DOWNLOAD_RETRY_BASE_DELAY = 0.01
    settings.DOWNLOAD_RETRY_MAX_DELAY = 0.05
    settings.DOWNLOAD_DISK_RESERVE = 0
    settings.OPERATION_PROGRESS_INTERVAL = 0.05
    hub_server.clear_faults()
    hub_server.reset_counters()
    hub_server.required_token = None
    yield hub_server
    hub_server.clear_faults()
    hub_server.required_token = None


@pytest.fixture
def small_filesystem(tmp_path):
    """Return a function that mounts a real tmpfs of a given size (needs root); unmount after.

    A full disk cannot be faked honestly; a small filesystem makes a real one.
    """
    mounted = []

    def mount(size: str):
        point = tmp_path / f"small-fs-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(
                f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}"
            )
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
