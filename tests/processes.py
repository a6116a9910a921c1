"""Helpers for tests and benchmarks that start real processes and servers.

`free_port`, `wait_until` and `wait_for_url` are the one way to pick a port and to wait for
something to happen: every wait has a deadline, and none is a fixed sleep. They use the
standard library only, so that the bench scripts (which put the repository root on
`sys.path` and import this module before Django is set up) can use them too.
"""

import http.client
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from typing import TypeVar

T = TypeVar("T")


class ProcessExited(AssertionError):
    """The process a wait depended on exited before the condition held."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at the moment.

    The port is free again when this returns, so a child process can bind it; the kernel
    hands out ephemeral ports in turn, which makes another taker in between unlikely.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    proc: subprocess.Popen | None = None,
) -> T:
    """Return the first truthy value of `predicate()`, called every `interval` seconds.

    Raise TimeoutError naming `what` when `timeout` seconds pass first, and ProcessExited
    at once when `proc` (the process that should make the condition true) has exited:
    waiting on a dead server to answer only hides its exit status for the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and (code := proc.poll()) is not None:
            raise ProcessExited(f"{proc.args!r} exited with status {code} before {what}", code)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(min(interval, left))


def wait_for_url(
    url: str,
    *,
    timeout: float,
    proc: subprocess.Popen | None = None,
    ok_statuses: Collection[int] = (200,),
    interval: float = 0.1,
) -> int:
    """GET `url` until it answers with one of `ok_statuses`; return that status.

    A refused or dropped connection, and any other status, is retried until the deadline
    (a server that is starting refuses, then may answer 503); the TimeoutError names the
    last answer. `proc` is the server: its exit ends the wait at once (ProcessExited).
    """
    deadline = time.monotonic() + timeout
    last: list[object] = ["no attempt"]

    def answered() -> int | None:
        # Each request's own timeout ends by the deadline, so a server that accepts and
        # never answers cannot stretch the wait.
        request_timeout = min(5.0, max(0.1, deadline - time.monotonic()))
        try:
            with urllib.request.urlopen(url, timeout=request_timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, http.client.HTTPException) as exc:
            last[0] = exc
            return None
        last[0] = f"status {status}"
        return status if status in ok_statuses else None

    try:
        return wait_until(
            answered, timeout=timeout, what=f"answer from {url}", interval=interval, proc=proc
        )
    except TimeoutError as exc:
        raise TimeoutError(f"{exc} (last: {last[0]!r})") from None


def database_url() -> str:
    """Return a DATABASE_URL naming the database this test runs on, for a child process."""
    from django.db import connection  # here: the bench scripts import this module too

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def backends_terminate(pids) -> None:
    """Cut these PostgreSQL server connections, as a restart does; wait until they are gone."""
    import psycopg

    with psycopg.connect(database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        wait_until(
            lambda: not admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
            ).fetchall(),
            timeout=10, what="the terminated backends to exit",
        )  # fmt: skip


def operation_thread(operation_id: int) -> tuple[threading.Thread, dict]:
    """Start a thread that runs one operation as a worker does; return it and its outcome.

    The outcome gets "state" (what operation_run returned, or the exception it raised) and
    "at" (time.monotonic() when it ended). The thread closes its database connection.
    """
    from django.db import connection

    from models_app.engine import operation_run

    outcome = {}

    def worker():
        try:
            outcome["state"] = operation_run(operation_id=operation_id)
        except Exception as exc:  # the test asserts on it
            outcome["state"] = exc
        finally:
            outcome["at"] = time.monotonic()
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    return thread, outcome


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
