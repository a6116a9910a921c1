"""Runtime test helpers: a GGUF installed in the test's store, a real runtime supervisor.

Every process a runtime test starts carries the test's tag in its environment
(`MODELYARD_TEST_TAG`), and so does every runner those processes start: `runner_processes`
finds the runners of one test, whoever their parent is now, so that a test can assert that
none survived it (other worktrees' runners on the machine are not its business).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from models_app.models import ProcessHeartbeat, RuntimeInstance
from models_app.runtime.processes import RUNNER_MODULE
from models_app.services import store_reconcile
from tests.processes import child_env, wait_until

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "a" * 40
TAG_VARIABLE = "MODELYARD_TEST_TAG"


def install_gguf(model, source: Path, hub_dir: Path, *, commit: str = COMMIT) -> Path:
    """Put `source` into the store as the model's GGUF file (a hard link: no 253 MB copy)."""
    repo = hub_dir / ("models--" + model.repo_id.replace("/", "--"))
    blob = repo / "blobs" / f"{model.key}-{source.stat().st_size}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        try:
            os.link(source, blob)
        except OSError:  # another filesystem
            blob.write_bytes(source.read_bytes())
    link = repo / "snapshots" / commit / model.gguf_file
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    store_reconcile(publish=False)
    return link


class RuntimeProcess:
    """`manage.py runtime` in a process of its own, sharing the test's database and store."""

    def __init__(self, settings, *, host: str = "test-host", **env):
        self.host = host
        self.env = child_env(
            settings,
            HOST_NAME=host,
            PROCESS_HEARTBEAT_INTERVAL="1",
            **{k: str(v) for k, v in env.items()},
        )
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, *, timeout: float = 30) -> RuntimeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runtime"], cwd=ROOT, env=self.env, start_new_session=True
        )
        # Its own heartbeat: a supervisor of this host that was killed left its row behind.
        wait_until(
            lambda: ProcessHeartbeat.objects.filter(
                role="runtime", host=self.host, pid=self.proc.pid
            ).exists(),
            timeout=timeout,
            what="the runtime supervisor's first heartbeat",
            proc=self.proc,
        )
        return self

    def runners(self) -> list[int]:
        """Return the runner processes this supervisor started that are still alive."""
        import psutil

        if self.proc is None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self._seen = set(getattr(self, "_seen", set())) | {p.pid for p in children}
        return [pid for pid in sorted(self._seen) if _is_live_runner(pid)]

    def stop(self, *, timeout: float = 15) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.runners()  # remember them: they must be gone after the stop
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the supervisor's group (its runners lead groups of their own)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def spare_runner(self) -> psutil.Process | None:
        """Return the supervisor's runner that no instance holds (the spare), if one runs."""
        held = set(RuntimeInstance.objects.exclude(pid=None).values_list("pid", flat=True))
        for child in children_running(self.proc.pid, RUNNER_MODULE):
            if child.pid not in held:
                return child
        return None


def children_running(pid: int, word: str) -> list[psutil.Process]:
    """Return the live (not zombie) children of `pid` whose command line holds `word`."""
    found = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if word in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
    return found


def runner_processes(tag: str) -> list[psutil.Process]:
    """Return the live runner processes started under this test tag, on the whole machine."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if RUNNER_MODULE not in " ".join(proc.info["cmdline"] or []):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TAG_VARIABLE) == tag:
                found.append(proc)
    return found


def wait_ready(model, *, timeout: float = 60) -> RuntimeInstance:
    """Wait until the model has a ready instance and its load operation has ended.

    The instance turns ready a moment before the load operation finishes; a test that
    starts another operation of the model (a delete) must wait for both, as a user would
    see the load end. A failed instance fails the wait at once.
    """
    from models_app.models import Operation

    def ready():
        instance = RuntimeInstance.objects.filter(model=model).order_by("-created_at").first()
        if instance is not None and instance.state == "failed":
            raise AssertionError(f"load failed: {instance.error_code} {instance.error_message}")
        if instance is None or instance.state != "ready":
            return None
        if Operation.objects.filter(
            pk=instance.operation_id, state__in=("queued", "running")
        ).exists():
            return None
        return instance

    return wait_until(ready, timeout=timeout, what=f"{model.key} ready")


def wait_ended(op_id: int, *, timeout: float = 60):
    """Wait until an operation reached an end state; return its row."""
    from models_app.models import Operation

    return wait_until(
        lambda: Operation.objects.filter(
            pk=op_id, state__in=("succeeded", "failed", "cancelled", "interrupted")
        ).first(),
        timeout=timeout,
        what=f"operation {op_id} to end",
    )


def process_gone(pid: int) -> bool:
    """Return True once a process has exited (a zombie that nobody reaped yet counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(model, *, timeout: float = 30) -> None:
    wait_until(
        lambda: not RuntimeInstance.objects.filter(model=model).exists(),
        timeout=timeout,
        what=f"{model.key} unloaded",
    )


class Daphne:
    """One daphne process serving the project on a free port, sharing the test's database."""

    def __init__(self, settings, **env):
        from tests.processes import free_port

        self.port = free_port()
        self.env = child_env(settings, **{k: str(v) for k, v in env.items()})
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Daphne:
        from tests.processes import wait_for_url

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "config.asgi:application"],
            cwd=ROOT, env=self.env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_url(f"{self.url}/healthz", timeout=40, proc=self.proc, ok_statuses=(200, 503))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _is_live_runner(pid: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "models_app.runtime.runner" in " ".join(
            proc.cmdline()
        )
    except psutil.Error:
        return False


# --- the OpenAI-compatible endpoints, as a client calls them --------------------------------


def v1_post(port: int, token: str, endpoint: str, body: dict, *, timeout: float = 120):
    """POST to /v1/<endpoint>; return (status, headers (case-insensitive), JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            f"/v1/{endpoint}",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        conn.close()


class V1Stream:
    """One streamed /v1 request: read its server-sent events one by one, hang up at will."""

    def __init__(self, port: int, token: str, endpoint: str, body: dict, *, timeout: float = 120):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request(
            "POST",
            f"/v1/{endpoint}",
            body=json.dumps({**body, "stream": True}),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers

    def event(self) -> dict | None:
        """Return the next `data:` event (None at `[DONE]` or the end of the stream)."""
        while True:
            line = self.response.readline()
            if not line:
                return None
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return None
            return json.loads(data)

    def close(self) -> None:
        """Hang up, as a client that has seen enough does."""
        self.conn.close()


def api_call(port: int, token: str, method: str, path: str, body: dict | None = None):
    """Call /api/v1<path> with a token; return (status, JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            method,
            f"/api/v1{path}",
            body=json.dumps(body) if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()
