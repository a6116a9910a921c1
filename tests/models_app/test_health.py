"""`/healthz` (anyone, no details) and `GET /api/v1/status` (superusers): each answer and field."""

import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from models_app.models import ActiveModel, ProcessHeartbeat
from models_app.store import get_store
from tests.factories import InstallationFactory, ModelFactory
from tests.processes import free_port, wait_until

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def beat(role="worker", *, pid=4242, host="host-a", age=0.0) -> ProcessHeartbeat:
    at = timezone.now() - timedelta(seconds=age)
    return ProcessHeartbeat.objects.create(
        role=role, host=host, pid=pid, started_at=at - timedelta(hours=1), beat_at=at
    )


# --- /healthz --------------------------------------------------------------------------------


def test_healthz_is_ok_with_a_fresh_worker_heartbeat(settings):
    settings.PROCESS_HEARTBEAT_INTERVAL = 5
    beat(age=14)  # two beats missed, not three
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response.headers["Cache-Control"]


@pytest.mark.parametrize(
    "rows",
    [[], [("worker", 16)], [("runtime", 0)]],
    ids=["no heartbeat", "stale worker", "a runtime only"],
)
def test_healthz_is_unavailable_without_a_fresh_worker(settings, rows):
    settings.PROCESS_HEARTBEAT_INTERVAL = 5
    for n, (role, age) in enumerate(rows):
        beat(role, pid=n + 1, age=age)
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}  # nothing more


def test_healthz_needs_no_sign_in_and_refuses_writes():
    beat()
    assert Client().head("/healthz").status_code == 200
    assert Client().post("/healthz").status_code == 405


def test_healthz_is_unavailable_when_the_database_is_unreachable(settings):
    # A real web process whose database (PostgreSQL on a port nothing listens on) is away.
    port = free_port()
    env = dict(
        os.environ,
        DATABASE_URL=f"postgres://nobody@127.0.0.1:{free_port()}/none",
        DB_POOL_TIMEOUT="2",  # how long a request waits for a connection from the pool
        LOG_LEVEL="CRITICAL",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "config.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def answer():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=20) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
            except OSError:
                return None

        status, body = wait_until(answer, timeout=60, what="an answer", interval=0.2, proc=proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert (status, body) == (503, b'{"status": "unavailable"}')


# --- GET /api/v1/status ------------------------------------------------------------------------


def test_status_auth_matrix(persona):
    name, client, refused = persona
    response = client.get("/api/v1/status")
    if refused:
        assert response.status_code == refused, (name, response.content)
        expected = "ERR_UNAUTHENTICATED" if refused == 401 else "ERR_FORBIDDEN"
        assert response.json()["code"] == expected
    else:
        assert response.status_code == 200, (name, response.content)


def test_status_reports_every_field(superuser_client, settings):
    settings.PROCESS_HEARTBEAT_INTERVAL = 5
    bge = ModelFactory(key="bge-small", type="embedding")
    InstallationFactory(model=bge)
    InstallationFactory(model=ModelFactory(key="qwen", type="llm"))
    ActiveModel.objects.create(type="embedding", model=bge)
    fresh = beat(pid=10, host="host-a")
    stale = beat(pid=11, host="host-b", age=60)
    runtime = beat("runtime", pid=12)

    body = superuser_client.get("/api/v1/status").json()

    assert body["status"] == "ok"
    assert body["version"] == "0.1.0"
    assert body["store_path"] == str(settings.MODELS_HUB_DIR)
    assert body["installed_count"] == 2
    assert body["active_models"] == {
        "embedding": "bge-small",
        "llm": None,
        "reranker": None,
        "splade": None,
    }
    assert body["loaded"] == []  # until the runtime issue
    assert [(w["host"], w["pid"], w["fresh"]) for w in body["workers"]] == [
        ("host-a", 10, True),
        ("host-b", 11, False),
    ]
    assert body["workers"][0]["beat_at"].startswith(f"{fresh.beat_at:%Y-%m-%dT%H:%M:%S}")
    assert body["workers"][1]["started_at"].startswith(f"{stale.started_at:%Y-%m-%dT%H:%M}")
    assert [(r["pid"], r["fresh"]) for r in body["runtimes"]] == [(runtime.pid, True)]
    total, free = get_store().disk_usage()
    assert body["disk_total_bytes"] == total
    assert 0 < body["free_disk_bytes"] <= total
    assert abs(body["free_disk_bytes"] - free) < 256 * 1024**2  # other writers on the disk


def test_status_without_workers_says_unavailable(superuser_client):
    body = superuser_client.get("/api/v1/status").json()
    assert body["status"] == "unavailable"
    assert body["workers"] == [] and body["runtimes"] == []


def test_status_is_in_the_openapi_spec(superuser_client):
    spec = superuser_client.get("/api/v1/openapi.json").json()
    operation = spec["paths"]["/api/v1/status"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/StatusOut")
    fields = spec["components"]["schemas"]["StatusOut"]["properties"]
    assert {"store_path", "installed_count", "active_models", "loaded", "workers", "runtimes",
            "free_disk_bytes", "version"} <= set(fields)  # fmt: skip
