"""Runtime test helpers: a GGUF installed in the test's store, a real runtime supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from models_app.models import ProcessHeartbeat, RuntimeInstance
from models_app.services import store_reconcile
from tests.processes import child_env, wait_until

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "a" * 40


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

    def start(self, *, timeout: float = 30) -> RuntimeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runtime"], cwd=ROOT, env=self.env, start_new_session=True
        )
        wait_until(
            lambda: ProcessHeartbeat.objects.filter(role="runtime", host=self.host).exists(),
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
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def wait_ready(model, *, timeout: float = 60) -> RuntimeInstance:
    """Wait until the model has a ready instance; fail on a failed one."""

    def ready():
        instance = RuntimeInstance.objects.filter(model=model).order_by("-created_at").first()
        if instance is not None and instance.state == "failed":
            raise AssertionError(f"load failed: {instance.error_code} {instance.error_message}")
        return instance if instance is not None and instance.state == "ready" else None

    return wait_until(ready, timeout=timeout, what=f"{model.key} ready")


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
