"""Runner processes: start one (ahead of need), hand it a model, watch it, stop it.

A process adapter: no Django. The runtime supervisor (services/runtime/supervisor.py) owns one
`RunnerTable` per host process; what a runner's life means for the database is its
concern.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

import psutil

from .runner import WARM_HEAP_ENV

RUNNER_MODULE = "models_app.runtime.runner"
# A runner asked to stop gets this long for uvicorn's graceful stop before SIGKILL.
STOP_GRACE = 1.5
# A runner starts with glibc's malloc as it is. Huge pages for its heap
# (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, with a 32 MiB mmap threshold) cut a fresh load's
# minor page faults from 38,526 to 1,462 but made it slower on these VMs: 1.203 s against
# 0.956 s, with as much more CPU (medians of 9, bench/load_faults.py), and decode no faster.
# An operator's GLIBC_TUNABLES still reaches the runner; its `spare` message names it.


class RunnerError(Exception):
    """A runner that could not load its model: `code` is a Modelyard error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RunnerSpec:
    """What a runner loads and how (the JSON line it reads on stdin)."""

    model_path: str
    alias: str
    n_ctx: int
    n_threads: int
    api_key: str
    n_gpu_layers: int = 0
    n_batch: int = 512
    embedding: bool = False
    # For embeddings: how token vectors become one ("mean", "cls", "last_token", "rank"),
    # set over the GGUF's own `<architecture>.pooling_type` (a chat model's has none).
    pooling: str = ""
    architecture: str = ""
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class Ready:
    port: int
    load_seconds: float
    pid: int


class Runner:
    """One runner process: a spare until `load()` hands it a model."""

    def __init__(self, *, warm_heap: int = 0):
        """Start the runner; `warm_heap` bytes of heap it faults in while a spare (runner.py)."""
        env = dict(os.environ)
        env.pop(WARM_HEAP_ENV, None)
        if warm_heap > 0:
            env[WARM_HEAP_ENV] = str(warm_heap)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", RUNNER_MODULE],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own group: a signal to the supervisor's terminal does not reach it; the
            # runner exits by itself when the supervisor is gone (it watches its parent).
            start_new_session=True,
        )
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self.spare = False  # its imports are done and it waits for a spec
        self.facts: dict = {}  # what it said when it became a spare
        self.stopping = False
        self._buffer = b""
        self._eof = False
        # The supervisor's loop drains a loaded runner's stdout while a load's eviction or an
        # unload may stop it in another thread: the pipe is closed under this lock only.
        self._pipe = threading.Lock()

    def wait_spare(self, timeout: float) -> bool:
        """Wait for the runner's imports to finish; False if it died or took too long."""
        if self.spare:
            return True
        message = self._read(timeout)
        self.spare = bool(message and message.get("event") == "spare")
        if self.spare:
            self.facts = message  # its pid, llama_cpp's version, malloc's tunables
        return self.spare

    def load(self, spec: RunnerSpec, *, timeout: float) -> Ready:
        """Hand the runner its model and wait until it serves; raise RunnerError if not."""
        if not self.wait_spare(timeout):
            raise RunnerError("ERR_INTERNAL", self._death("before it was ready to load"))
        try:
            self.proc.stdin.write((json.dumps(asdict(spec)) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RunnerError("ERR_INTERNAL", self._death("before it took its model")) from None
        message = self._read(timeout)
        if message is None:
            if not self._eof:
                self.stop()
                raise RunnerError(
                    "ERR_TIMEOUT", f"The model did not load within {timeout:g} s; it was stopped."
                )
            raise RunnerError("ERR_FORMAT", self._death("while it loaded the model"))
        if message.get("event") == "error":
            self.proc.wait(timeout=5)
            raise RunnerError(message.get("code", "ERR_FORMAT"), message.get("message", ""))
        return Ready(
            port=int(message["port"]),
            load_seconds=float(message["load_seconds"]),
            pid=self.pid,
        )

    def _read(self, timeout: float) -> dict | None:
        """Return the next JSON line of the runner's stdout; None on its death or timeout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self._eof = True  # it exited (or is exiting)
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return {"event": "error", "code": "ERR_INTERNAL", "message": line.decode()[:500]}

    def _death(self, when: str) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return f"The runner process stopped answering {when}."
        return f"The runner process exited {when} ({exit_description(code)})."

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fileno(self) -> int:
        """The runner's stdout: readable (end of file) the moment the runner dies."""
        return self.proc.stdout.fileno()

    def drain(self) -> None:
        """Read what a loaded runner wrote since (nothing, until it ends); nothing to read
        once another thread stopped it (its pipe closed after the loop's select)."""
        with self._pipe, contextlib.suppress(OSError, ValueError):
            if not os.read(self.fileno(), 65536):
                self.proc.poll()

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def rss(self) -> int | None:
        """Return the runner's resident memory in bytes (None once it is gone)."""
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.pid).memory_info().rss
        return None

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """Stop the runner (SIGTERM, then SIGKILL after `grace` s); return its exit code."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # a spare that never got a spec exits on EOF
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                kill_process(self.pid)
                self.proc.wait()
        with self._pipe, contextlib.suppress(OSError):
            self.proc.stdout.close()
        return self.proc.returncode


def exit_description(code: int | None) -> str:
    """Say how a process ended: 'status 3' or 'killed by SIGKILL'."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = "; out of memory?" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"status {code}"


def kill_process(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def is_runner(pid: int) -> bool:
    """Return True if `pid` is a runner process (of any supervisor) on this host."""
    with contextlib.suppress(psutil.Error):
        return RUNNER_MODULE in " ".join(psutil.Process(pid).cmdline())
    return False


class RunnerTable:
    """The runners of one supervisor process: loaded ones by instance id, and one spare."""

    def __init__(self, *, keep_spare: bool = True, spare_heap: int = 0):
        self.keep_spare = keep_spare
        self.spare_heap = spare_heap  # bytes of heap a spare faults in while it waits
        self.loaded: dict[int, Runner] = {}
        self._spare: Runner | None = None
        self._lock = threading.Lock()

    def take(self) -> Runner:
        """Return a runner to load a model in: the spare (started earlier), or a new one."""
        with self._lock:
            runner, self._spare = self._spare, None
        if runner is not None and runner.alive():
            return runner
        return Runner()

    def refill(self) -> None:
        """Start a spare if none is waiting (the supervisor calls this from its loop)."""
        if not self.keep_spare:
            return
        with self._lock:
            if self._spare is not None and self._spare.alive():
                return
            if self._spare is not None:
                self._spare.stop()
            self._spare = Runner(warm_heap=self.spare_heap)

    def spare_pid(self) -> int | None:
        with self._lock:
            return self._spare.pid if self._spare is not None else None

    def stop_all(self) -> None:
        with self._lock:
            runners, self.loaded = [*self.loaded.values()], {}
            if self._spare is not None:
                runners.append(self._spare)
            self._spare = None
        for runner in runners:
            runner.stopping = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(runner.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for runner in runners:
            try:
                runner.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_process(runner.pid)
                runner.proc.wait()


class Doorbell:
    """A UDP socket a supervisor waits on: a ring wakes it at once (a load was queued).

    Rings are hints, not messages: a lost one costs a poll interval, never work.
    """

    def __init__(self, host: str = "127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self.sock.recv(64):
                pass

    def close(self) -> None:
        self.sock.close()


def ring(address: str, port: int) -> None:
    """Ring a supervisor's doorbell (best effort: it polls anyway)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"!", (address, port))
