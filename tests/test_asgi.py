"""The ASGI entry point: a web process pools PostgreSQL connections; nothing it starts does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.processes import database_url

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os
import config.asgi
from django.db import connection
print(json.dumps({
    "pool": connection.settings_dict["OPTIONS"].get("pool"),
    "engine": connection.settings_dict["ENGINE"],
    "conn_max_age": connection.settings_dict["CONN_MAX_AGE"],
    "flag_left": "MODELYARD_WEB_PROCESS" in os.environ,
}))
"""


def test_importing_the_app_after_the_settings_leaves_no_flag_behind():
    # The test process read its settings long ago: importing the app must not mark it a
    # web process, or every worker a test starts would inherit the mark (and a pool).
    import config.asgi  # noqa: F401

    assert "MODELYARD_WEB_PROCESS" not in os.environ


@pytest.mark.django_db
def test_a_web_process_pools_postgresql_connections_and_its_children_do_not():
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    env.pop("MODELYARD_WEB_PROCESS", None)
    web = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    figures = json.loads(web.stdout.strip().splitlines()[-1])
    assert figures["pool"]["max_size"] >= 1 and figures["conn_max_age"] == 0
    assert figures["engine"] == "config.postgresql"  # its pool survives a server restart
    assert figures["flag_left"] is False
    # A process that is not started as a web process (a worker, a command) keeps
    # persistent connections: django-q2 forks its workers, and a pool does not survive that.
    not_web = PROBE.replace("import config.asgi", "import django; django.setup()")
    worker = subprocess.run(
        [sys.executable, "-c", not_web],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures = json.loads(worker.stdout.strip().splitlines()[-1])
    assert figures["pool"] is None and figures["conn_max_age"] > 0
    assert figures["engine"] == "django.db.backends.postgresql"
