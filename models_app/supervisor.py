"""Keep a set of child processes running: restart the dead with backoff, stop all on a signal.

The process adapter under `manage.py run`. It knows processes, not Django: what a child's
death means for the database (its workers' operations) is the `on_exit` hook its entry
names, and the periodic `tick` is the caller's (the reaper).

Each child leads its own process group (its own session), so that nothing a terminal or a
test sends to `run` reaches it behind the supervisor's back, and so that a dead child's
orphans can be killed with it. A child is asked to stop by a signal to its leader alone:
django-q2's cluster handles SIGTERM and SIGINT in its first process, but its sentinel and
workers take SIGTERM's default (death) and ignore SIGINT, so a signal sent to the whole
group would kill them mid-task. daphne (Twisted) always handles SIGTERM, and SIGINT only
when it started with SIGINT at its default: a shell's background job (`manage.py run &`)
ignores SIGINT, and so does every child it starts. Hence SIGTERM, to the leader.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import psutil

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Child:
    """One line of the table: a process to keep running.

    `on_exit(pids, reason)` is called with the pids of the child's process tree (as last
    seen) when the child or one of its processes ends, `on_stop(pids)` when a stop begins.
    """

    name: str
    argv: Sequence[str]
    pass_fds: tuple[int, ...] = ()
    stop_signal: int = signal.SIGTERM
    on_exit: Callable[[Collection[int], str], object] | None = None
    on_stop: Callable[[Collection[int]], object] | None = None


@dataclass(frozen=True)
class Backoff:
    """Restart delays: `first` doubling to `longest`; back to `first` after a steady run."""

    first: float = 1.0
    longest: float = 30.0
    steady: float = 30.0


@dataclass
class _Running:
    child: Child
    proc: subprocess.Popen | None = None
    started: float = 0.0
    delay: float = 0.0
    restart_at: float = 0.0
    tree: set[int] = field(default_factory=set)
    tree_at: float = 0.0


class Supervisor:
    """Run the children until SIGINT or SIGTERM; restart each that dies; then stop them all.

    A child's death never stops the others. Stopping signals every child, waits up to
    `stop_timeout` seconds for them, kills what is left (a second signal kills at once),
    and leaves no process of any child's group behind.
    """

    def __init__(
        self,
        children: Sequence[Child],
        *,
        tick: Callable[[], object] | None = None,
        tick_every: float = 2.0,
        stop_timeout: float = 10.0,
        backoff: Backoff | None = None,
    ):
        self.running = [_Running(child) for child in children]
        self.tick = tick
        self.tick_every = tick_every
        self.stop_timeout = stop_timeout
        self.backoff = backoff or Backoff()
        self.signals = 0

    def run(self) -> None:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for r in self.running:
                r.delay = self.backoff.first
                self._spawn(r)
            next_tick = time.monotonic() + self.tick_every
            while not self.signals:
                now = time.monotonic()
                for r in self.running:
                    self._watch(r, now)
                if self.tick is not None and now >= next_tick:
                    self._call("tick", self.tick)
                    next_tick = time.monotonic() + self.tick_every
                time.sleep(0.1)
        finally:
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1

    def _spawn(self, r: _Running) -> None:
        r.proc = subprocess.Popen(
            r.child.argv,
            start_new_session=True,
            pass_fds=r.child.pass_fds,
            preexec_fn=_die_with_parent,
        )
        r.started = r.tree_at = time.monotonic()
        r.tree = set()

    def _watch(self, r: _Running, now: float) -> None:
        if r.proc is None:
            if now >= r.restart_at:
                self._spawn(r)
                logger.warning("%s restarted (pid %s)", r.child.name, r.proc.pid)
            return
        code = r.proc.poll()
        if code is None:
            if now - r.tree_at >= 1.0:
                self._refresh_tree(r, now)
            return
        ran = now - r.started
        if ran >= self.backoff.steady:
            r.delay = self.backoff.first
        logger.error("%s exited with status %s; restarting in %g s", r.child.name, code, r.delay)
        # Its orphans (a worker whose sentinel died) go with it: a new one starts clean.
        _kill_group(r.proc.pid)
        self._exited(r, r.tree | {r.proc.pid}, f"{r.child.name} exited with status {code}")
        r.proc = None
        r.restart_at = now + r.delay
        r.delay = min(r.delay * 2, self.backoff.longest)

    def _refresh_tree(self, r: _Running, now: float) -> None:
        """Remember the child's processes; those gone since the last look have ended."""
        tree = _tree(r.proc.pid)
        ended = {pid for pid in r.tree - tree if not psutil.pid_exists(pid)}
        r.tree, r.tree_at = tree, now
        if ended:
            # django-q2 starts another worker in its place; its work is interrupted now.
            self._exited(r, ended, f"a process of {r.child.name} ended")

    def _exited(self, r: _Running, pids: Collection[int], reason: str) -> None:
        if r.child.on_exit is not None:
            self._call(f"{r.child.name} exit", r.child.on_exit, pids, reason)

    def _call(self, what: str, hook, *args) -> None:
        try:
            hook(*args)
        except Exception:  # the supervisor outlives a database that is briefly away
            logger.exception("supervisor %s hook failed", what)

    def _stop(self) -> None:
        for r in self.running:
            if r.proc is not None and (code := r.proc.poll()) is not None:
                # It died as the stop began, before the loop saw it: its work ends now too.
                _kill_group(r.proc.pid)
                self._exited(r, r.tree | {r.proc.pid}, f"{r.child.name} exited with status {code}")
        live = [r for r in self.running if r.proc is not None and r.proc.poll() is None]
        for r in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.proc.pid, r.child.stop_signal)
        for r in live:
            if r.child.on_stop is not None:
                r.tree = _tree(r.proc.pid)
                self._call(f"{r.child.name} stop", r.child.on_stop, r.tree | {r.proc.pid})
        signals = self.signals
        deadline = time.monotonic() + self.stop_timeout
        while (
            any(r.proc.poll() is None for r in live)
            and time.monotonic() < deadline
            and self.signals <= max(signals, 1)  # a second Ctrl-C: kill now
        ):
            time.sleep(0.05)
        for r in live:
            if r.proc.poll() is None:
                logger.warning(
                    "%s did not stop within %g s; killing it", r.child.name, self.stop_timeout
                )
                _kill_group(r.proc.pid)
                r.proc.wait()
                self._exited(r, r.tree | {r.proc.pid}, f"{r.child.name} was killed at stop")
        for r in self.running:
            if r.proc is not None:
                _kill_group(r.proc.pid)  # anything of its group that outlived its leader
                r.proc.wait()


def _tree(pid: int) -> set[int]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    return set()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `run` itself dies (Linux), not orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
