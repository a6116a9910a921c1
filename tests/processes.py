"""Helpers for tests that start real processes (daphne, qcluster) on the test database."""

import os
import socket

from django.db import connection


def database_url() -> str:
    """Return a DATABASE_URL naming the database this test runs on, for a child process."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(settings, **extra) -> dict:
    """Return the environment of a child process sharing this test's database and store.

    Fast progress and no disk reserve; no Redis and no hub token unless given in extra.
    """
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MODELS_DIR": str(settings.MODELS_DIR),
        "LEGACY_HUB_DIR": str(settings.LEGACY_HUB_DIR),
        "HF_ENDPOINT": settings.HF_ENDPOINT,
        "Q_WORKERS": "1",
        "DOWNLOAD_DISK_RESERVE": "0",
        "DOWNLOAD_RETRY_BASE_DELAY": "0.05",
        "OPERATION_PROGRESS_INTERVAL": "0.1",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env
