"""docs/deploy.md holds: the production settings pass `check --deploy`, and the store alone
rebuilds the installed state into an empty database."""

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from django.db import connection

from models_app import services
from models_app.engine import operation_run
from models_app.models import Installation, StoreScan, UnmanagedRepo
from tests.hub_cache import write_partial, write_snapshot
from tests.processes import child_env

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def documented_environment() -> dict[str, str]:
    """Return the KEY=VALUE lines of the production environment file in docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    block = re.search(r"<!-- production-env -->\s*```\w*\n(.*?)```", text, flags=re.S)
    assert block, "docs/deploy.md has no <!-- production-env --> block"
    pairs = (line.split("=", 1) for line in block.group(1).splitlines())
    return {k.strip(): v.strip() for k, v in (p for p in pairs if len(p) == 2) if k[:1] != "#"}


# --- check --deploy ---------------------------------------------------------------------


def test_the_documented_production_settings_pass_check_deploy(tmp_path):
    documented = documented_environment()
    for name in (
        "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "TRUST_PROXY_HEADERS",
        "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS", "DATABASE_URL", "REDIS_URL", "MODELS_DIR",
    ):  # fmt: skip
        assert name in documented, f"docs/deploy.md's environment does not set {name}"
    env = {k: v for k, v in os.environ.items() if k not in documented}
    env.pop("ENV_FILE", None)
    env.update(documented)
    # What only the host can say: its own secret, database, Redis and a store it may write.
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"sqlite:///{tmp_path / 'check.sqlite3'}",
        REDIS_URL="redis://127.0.0.1:6379/13",
        MODELS_DIR=str(tmp_path / "models"),
        DATA_DIR=str(tmp_path / "data"),
        ENV_FILE=str(tmp_path / "no.env"),
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_the_defaults_are_not_production_ready(tmp_path):
    """Without the documented settings `check --deploy` warns: the test above is not empty."""
    env = {k: v for k, v in os.environ.items() if k not in documented_environment()}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'check.sqlite3'}",
        MODELS_DIR=str(tmp_path / "models"),
        DATA_DIR=str(tmp_path / "data"),
        ENV_FILE=str(tmp_path / "no.env"),
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    for warning in ("W004", "W008", "W009", "W012", "W016"):
        assert f"security.{warning}" in done.stderr, done.stderr


def test_the_guide_names_the_live_websocket_route():
    from models_app.routing import websocket_urlpatterns

    text = DEPLOY_DOC.read_text()
    nginx = re.search(r"```nginx\n(.*?)```", text, flags=re.S).group(1)
    proxied = re.findall(r"location (/\S*) \{([^}]*)\}", nginx)
    for route in websocket_urlpatterns:
        path = f"/{route.pattern}"
        assert path in text
        # The location that serves it passes the websocket upgrade on.
        matching = [(prefix, body) for prefix, body in proxied if path.startswith(prefix)]
        _, body = max(matching, key=lambda location: len(location[0]))  # nginx's choice
        assert "Upgrade $http_upgrade" in body and "Connection $connection_upgrade" in body


# --- recovery: the database lost, the store kept ----------------------------------------


def installations() -> dict:
    return {
        i.model.key: {
            "location": i.location,
            "commit": i.commit_hash,
            "snapshot": i.snapshot_path,
            "files": sorted(i.files),
            "size": i.size_on_disk,
        }
        for i in Installation.objects.select_related("model")
    }


def installed_state() -> dict:
    """Return what the database says is on disk, in a form two databases can compare."""
    scan = StoreScan.objects.filter(scope="full").latest()
    return {
        "installations": installations(),
        "unmanaged": sorted(
            [u.repo_id, u.location, u.size_on_disk, sorted(u.revisions)]
            for u in UnmanagedRepo.objects.all()
        ),
        "figures": {
            "managed": scan.managed_bytes,
            "unmanaged": scan.unmanaged_bytes,
            "partial": scan.partial_bytes,
            "partial_files": len(scan.partial_files),
        },
    }


def registry_entry(key, repo_id, **extra) -> dict:
    return {
        "key": key, "repo_id": repo_id, "revision": "main", "type": "embedding",
        "name": key, "description": "A model the recovery test installs.", "family": "Acme",
        "parameter_count": 1000, "quantization": None,
        "files": {"gguf": None, "allow_patterns": ["*.json", "*.safetensors", "1_Pooling/*"]},
        "download_size": None, "context_window": 512, "embedding_dimension": 32,
        "pooling": "cls", "query_prefix": None, "document_prefix": None,
        "memory_estimates": {}, "ram_required": None, "sha256": {}, "recommended": False,
        "tags": [], "license": "mit",
    } | extra  # fmt: skip


@pytest.fixture
def empty_database_url(tmp_path):
    """Return the URL of a new, empty database on the same server as the tests' one."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'recovered.sqlite3'}"
        return
    import psycopg

    db = connection.settings_dict
    name = f"{db['NAME']}_recovered_{uuid.uuid4().hex[:8]}"
    server = {
        "host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432,
        "user": db["USER"], "password": db["PASSWORD"] or None, "dbname": "postgres",
    }  # fmt: skip
    with psycopg.connect(**server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (f"postgres://{db['USER']}@{server['host']}:{server['port']}/{name}")
    finally:
        with psycopg.connect(**server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.django_db
def test_migrate_sync_reconcile_rebuild_the_installed_state_from_the_store(
    hub, settings, isolated_store, tmp_path, empty_database_url
):
    registry = tmp_path / "site-registry.yaml"
    gguf = {"files": {"gguf": "tiny-q4_k_m.gguf", "allow_patterns": []}, "type": "llm"}
    entries = [
        registry_entry("tiny-embed", "acme/tiny-embed"),
        registry_entry("tiny-q4", "acme/tiny-llm-GGUF", **gguf),
        registry_entry(
            "tiny-q5", "acme/tiny-llm-GGUF",
            **{**gguf, "files": {"gguf": "tiny-q5_k_m.gguf", "allow_patterns": []}},
        ),
        registry_entry("slow-embed", "acme/slow-embed"),
    ]  # fmt: skip
    registry.write_text(yaml.safe_dump({"models": entries}, sort_keys=False))
    settings.MODEL_REGISTRY_FILES = [str(registry)]
    services.registry_sync()
    # Two real downloads from the hub server; tiny-q5 (same repo) and slow-embed stay out.
    from models_app.models import Model

    for key in ("tiny-embed", "tiny-q4"):
        started = services.download_start(model=Model.objects.get(key=key))
        assert operation_run(operation_id=started.operation.id) == "succeeded"
    downloaded = installations()
    # Besides: a repo no entry claims, and a download's partial file.
    write_snapshot(isolated_store, "someone/unlisted", "c" * 40, {"weights.bin": b"w" * 5000})
    write_partial(isolated_store, "acme/slow-embed", "ab" * 32, 70_000)
    services.store_reconcile()
    before = installed_state()
    assert before["installations"] == downloaded
    assert set(downloaded) == {"tiny-embed", "tiny-q4"}
    assert before["unmanaged"] and before["figures"]["partial_files"] == 1

    # The database is lost: an empty one, the same store and settings, the three commands.
    env = child_env(settings, DATABASE_URL=empty_database_url, MODEL_REGISTRY_FILES=str(registry))
    for command in (["migrate", "-v0"], ["registry_sync"], ["models_reconcile"]):
        done = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    dump = (
        "import json, django; django.setup(); "
        "from tests.test_deploy import installed_state; print(json.dumps(installed_state()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", dump], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = json.loads(done.stdout.strip().splitlines()[-1])
    assert after == json.loads(json.dumps(before))
