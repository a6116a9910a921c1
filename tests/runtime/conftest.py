"""Fixtures of the runtime tests: Gemma entries in the store, and the test's own processes.

`processes` starts runtime supervisors, daphne processes and `manage.py run` for one test,
all tagged with the test's tag, and at the end stops them and asserts that no runner of the
test is left on the machine (a runner that survived is killed, and the test errors).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid

import pytest

from models_app.models import Installation, ProcessHeartbeat
from tests.factories import ModelFactory
from tests.gemma import gemma_file  # noqa: F401  (a fixture)
from tests.processes import child_env, free_port, wait_for_url, wait_until
from tests.runtime_helpers import (
    ROOT,
    TAG_VARIABLE,
    RuntimeProcess,
    install_gguf,
    runner_processes,
)

GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"


@pytest.fixture
def gemma_entry(settings, gemma_file):  # noqa: F811
    """Return a function that makes an installed LLM entry of the real Gemma file.

    Each key is an entry of its own (its own repo in the store, the blob a hard link of
    the one assembled file), so that two registry keys can stand for two models.
    """

    def make(key: str = "gemma-3-270m-q4_k_m"):
        model = ModelFactory(
            key=key,
            repo_id=f"test/{key}-GGUF",
            type="llm",
            name=f"Gemma 3 270M ({key})",
            gguf_file=GEMMA_FILE,
            allow_patterns=[],
            context_window=32768,
            source="custom",  # `manage.py run` syncs the registry: a custom entry stays
        )
        install_gguf(model, gemma_file, settings.MODELS_HUB_DIR)
        assert Installation.objects.filter(model=model).exists()
        return model

    return make


@pytest.fixture
def gemma(gemma_entry):
    return gemma_entry()


class Web:
    """One daphne process on a port of its own (a web process of a host)."""

    def __init__(self, env: dict, log):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "config.asgi:application"],
            cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait(self, timeout: float = 60) -> Web:
        wait_for_url(f"http://127.0.0.1:{self.port}/healthz", timeout=timeout, proc=self.proc,
                     ok_statuses=(200, 503))  # fmt: skip
        return self


class Run:
    """One `manage.py run` (two daphne processes on one socket, the runtime; no qcluster)."""

    def __init__(self, env: dict, log_path):
        self.port = free_port()
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "run", "--port", str(self.port), "--no-worker"],
                cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> Run:
        wait_for_url(f"http://127.0.0.1:{self.port}/healthz", timeout=timeout, proc=self.proc,
                     ok_statuses=(200, 503))  # fmt: skip
        return self


class Processes:
    """The processes of one test, tagged so that their runners can be found anywhere."""

    def __init__(self, settings, tmp_path):
        self.settings = settings
        self.tag = uuid.uuid4().hex
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.runtimes: list[RuntimeProcess] = []
        self.others: list[Web | Run] = []

    def env(self, **extra) -> dict:
        return child_env(
            self.settings,
            PROCESS_HEARTBEAT_INTERVAL="1",
            RUNTIME_POLL_INTERVAL="0.05",
            **{TAG_VARIABLE: self.tag},
            **{k: str(v) for k, v in extra.items()},
        )

    def runtime(self, *, host: str = "test-host", **env) -> RuntimeProcess:
        process = RuntimeProcess(self.settings, host=host, **{TAG_VARIABLE: self.tag}, **env)
        self.runtimes.append(process)
        return process.start()

    def web(self, *, host: str = "test-host", **env) -> Web:
        log = (self.logs / f"web-{len(self.others)}.log").open("ab")
        web = Web(self.env(HOST_NAME=host, **env), log)
        log.close()
        self.others.append(web)
        return web.wait()

    def run(self, *, host: str = "test-host", **env) -> Run:
        log = self.logs / f"run-{len(self.others)}.log"
        run = Run(self.env(HOST_NAME=host, WEB_PROCESSES="2", LOG_LEVEL="INFO", **env), log)
        self.others.append(run)
        run.wait()
        # Its web processes answer before its runtime child is up (a load asked then: 503).
        wait_until(
            lambda: ProcessHeartbeat.objects.filter(role="runtime", host=host).exists(),
            timeout=30, what="run's runtime supervisor", proc=run.proc,
        )  # fmt: skip
        return run

    def runners(self):
        return runner_processes(self.tag)

    def close(self) -> None:
        for process in self.runtimes:
            if process.proc is not None:
                process.stop()
        for other in self.others:
            if other.proc.poll() is None:
                other.proc.send_signal(signal.SIGTERM)
                try:
                    other.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    other.proc.kill()
                    other.proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(other.proc.pid, signal.SIGKILL)

    def assert_no_runner_left(self) -> None:
        """Fail if a runner of this test outlived its processes (killing it first)."""
        try:
            wait_until(lambda: not self.runners(), timeout=5, what="every runner to exit")
        except TimeoutError:
            left = self.runners()
            for proc in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            raise AssertionError(f"runners outlived the test: {[p.pid for p in left]}") from None


@pytest.fixture
def processes(settings, tmp_path):
    system = Processes(settings, tmp_path)
    try:
        yield system
    finally:
        system.close()
        system.assert_no_runner_left()
