"""The production topology on one machine, for tests: every process real, every server our own.

A PostgreSQL (initdb'd into a directory of its own, on a port of its own), a Redis (no
persistence), two daphne processes on two ports ("web-1", "web-2"), two qclusters standing
for two hosts ("cluster-1", "cluster-2"), one models store (MODELS_DIR) that all of them
share, and the hub server (tests/hub_server.py) in this process, where its request log
and byte counters can be read. Tests drive it as users and operators would: the HTTP API
with a superuser's token, websocket clients with a session cookie from the admin login
form, signals to the processes, restarts of the servers. SQL through psycopg is only for
what no interface shows (django-q2's schedule and task tables).

Servers need their binaries (PostgreSQL's under /usr/lib/postgresql/*/bin, redis-server);
`missing_servers()` names what is not installed, so that a test can skip.
"""

from __future__ import annotations

import contextlib
import glob
import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from tests.processes import child_env, free_port, wait_for_url, wait_until

ROOT = Path(__file__).resolve().parents[1]
ADMIN_USER, ADMIN_PASSWORD = "topology-root", "topology-pw-1"
DATABASE = "modelyard"

# What each kind of process runs: the one place to change when `manage.py run` takes over.
WEB_COMMAND = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "{port}"]
WEB_COMMAND += ["config.asgi:application"]
CLUSTER_COMMAND = [sys.executable, "manage.py", "qcluster"]


def _postgres_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found and shutil.which("postgres") else None


def missing_servers() -> list[str]:
    """Return the server binaries the topology needs and cannot find."""
    missing = []
    if _postgres_bin() is None:
        missing.append("initdb/postgres (PostgreSQL server binaries)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


def _as_postgres() -> dict:
    """Popen arguments that run a child as the `postgres` OS user when we are root.

    PostgreSQL refuses to run as root; any other user runs it as itself.
    """
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class PostgresServer:
    """A PostgreSQL cluster of our own: its data directory, its port, fast to stop and start."""

    def __init__(self, root: Path, log: Path):
        self.bin = _postgres_bin()
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = log  # opened by us: it outlives the data directory

    def url(self, database: str = DATABASE) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--no-sync"],
            cwd=self.root, check=True, capture_output=True, **_as_postgres(),
        )  # fmt: skip

    def start(self, *, timeout: float = 30) -> None:
        # Durability is not what these tests prove: fsync off keeps the shared disk quiet.
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            cwd=self.root, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True, **_as_postgres(),
        )  # fmt: skip
        wait_until(self.answers, timeout=timeout, what="PostgreSQL to accept", proc=self.proc)

    def answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self, *, timeout: float = 30) -> None:
        """Stop it the way `systemctl restart` does: fast shutdown (SIGINT), clients cut off."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')


class RedisServer:
    """A Redis of our own on its own port; nothing persisted, so a restart starts empty."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = root / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 20) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.root)],
            cwd=self.root, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self.answers, timeout=timeout, what="Redis to answer PING", proc=self.proc)

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def answers(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def stop(self, *, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Topology:
    """The running system: servers, web processes, clusters, the shared store, the hub."""

    def __init__(self, root: Path, hub, registry_file: Path, *, stale: int):
        self.root = root
        self.hub = hub
        self.registry_file = registry_file
        self.stale = stale
        self.store = root / "models"
        self.logs = root / "logs"
        self.logs.mkdir()
        # PostgreSQL runs as its own OS user: its directory cannot live under pytest's
        # tmp_path (root-only); a directory of its own under /tmp is removed at the end.
        self.pg = PostgresServer(
            Path(tempfile.mkdtemp(prefix="modelyard-topology-pg-")), self.logs / "postgres.log"
        )
        self.redis = RedisServer(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.web_ports = {"web-1": free_port(), "web-2": free_port()}
        self.token = ""
        self.cookie = ""

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def env(self) -> dict:
        where = SimpleNamespace(
            MODELS_DIR=self.store,
            LEGACY_HUB_DIR=self.root / "legacy-hub-absent",
            HF_ENDPOINT=self.hub.url,
        )
        return child_env(
            where,
            DATABASE_URL=self.pg.url(),
            REDIS_URL=self.redis.url,
            Q_WORKERS="2",
            OPERATION_HEARTBEAT_STALE=str(self.stale),
            OPERATION_PROGRESS_INTERVAL="0.3",
            MODEL_REGISTRY_FILES=str(self.registry_file),
            MODELYARD_ADMIN_USER=ADMIN_USER,
            MODELYARD_ADMIN_PASSWORD=ADMIN_PASSWORD,
            LOG_LEVEL="INFO",
        )

    def start(self) -> None:
        started = time.monotonic()
        self.pg.init()
        self.pg.start()
        self.pg.create_database(DATABASE)
        self.redis.start()
        self.token = self._prepare_database()
        for name in self.web_ports:
            self.start_web(name)
        for name in ("cluster-1", "cluster-2"):
            self.start_cluster(name)
        for name in self.web_ports:
            self.wait_web(name)
        self.cookie = self._login("web-1")
        self.wait_clusters()
        print(f"[topology] started in {time.monotonic() - started:.1f} s")

    def _prepare_database(self) -> str:
        """Migrate, sync the registry, create the superuser; return an API token of theirs."""
        script = (
            "import django; django.setup()\n"
            "from io import StringIO\n"
            "from django.core.management import call_command\n"
            "call_command('migrate', verbosity=0)\n"
            "call_command('registry_sync', stdout=StringIO())\n"
            "call_command('ensure_superuser', stdout=StringIO())\n"
            "out = StringIO()\n"
            f"call_command('api_token', {ADMIN_USER!r}, name='topology', stdout=out)\n"
            "print('TOKEN=' + out.getvalue().strip())\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=self.env,
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.rsplit("TOKEN=", 1)[1].strip()

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        # Its own session, so that one killpg reaches a cluster's sentinel, pusher, monitor
        # and workers: the whole "host".
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env, start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def start_web(self, name: str) -> subprocess.Popen:
        port = str(self.web_ports[name])
        return self._spawn(name, [part.replace("{port}", port) for part in WEB_COMMAND])

    def wait_web(self, name: str, *, timeout: float = 60) -> None:
        wait_for_url(self.url(name, "/admin/login/"), timeout=timeout, proc=self.procs[name])

    def start_cluster(self, name: str) -> subprocess.Popen:
        return self._spawn(name, CLUSTER_COMMAND)

    def wait_clusters(self, *, timeout: float = 60) -> None:
        """Wait until every running cluster has a pusher waiting on the Redis queue."""
        clusters = [n for n, p in self.procs.items() if n.startswith("cluster")]

        def waiting() -> bool:
            for name in clusters:
                if (code := self.procs[name].poll()) is not None:
                    raise AssertionError(f"{name} exited with {code}: {self.log_tail(name)}")
            # Each cluster's pusher holds one blocked BLPOP connection.
            with contextlib.suppress(Exception):
                return self.redis.client().info("clients")["blocked_clients"] >= len(clusters)
            return False

        wait_until(waiting, timeout=timeout, what="both clusters to wait for tasks", interval=0.2)

    def signal_group(self, name: str, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[name].pid, sig)

    def kill(self, name: str) -> None:
        """SIGKILL a process's whole group (a host lost at once) and wait for its leader."""
        self.signal_group(name, signal.SIGKILL)
        self.procs[name].wait(timeout=20)

    def ensure_running(self) -> None:
        """Start again any web process or cluster that is not running (after a scenario)."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                self.signal_group(name, signal.SIGKILL)  # leftovers of its group
                if name.startswith("web"):
                    self.start_web(name)
                    self.wait_web(name)
                else:
                    self.start_cluster(name)
        self.wait_clusters()

    def close(self) -> None:
        # Not a graceful stop: nothing here is mid-write that a test still looks at.
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(name)
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.pg.root, ignore_errors=True)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def cluster_of(self, path_part: str) -> str | None:
        """Return the cluster one of whose processes has a file open whose path holds this."""
        import psutil

        for name, proc in self.procs.items():
            if not name.startswith("cluster") or proc.poll() is not None:
                continue
            try:
                group = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
            except psutil.NoSuchProcess:
                continue
            for member in group:
                with contextlib.suppress(psutil.Error):
                    if any(path_part in f.path for f in member.open_files()):
                        return name
        return None

    # --- the interfaces ---------------------------------------------------------------------

    def url(self, web: str, path: str) -> str:
        return f"http://127.0.0.1:{self.web_ports[web]}{path}"

    def api(self, method: str, path: str, *, web: str = "web-1", timeout: float = 30):
        """Call the API with the superuser's token; return (status, JSON body)."""
        request = urllib.request.Request(
            self.url(web, f"/api/v1{path}"),
            method=method,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, body.decode(errors="replace")[:500]

    def download(self, key: str, *, web: str = "web-1") -> dict:
        status, body = self.api("POST", f"/models/{key}/download", web=web)
        assert status in (200, 202), (status, body)
        return body["operation"]

    def operation(self, op_id: int, *, web: str = "web-1") -> dict:
        status, body = self.api("GET", f"/operations/{op_id}", web=web)
        assert status == 200, (status, body)
        return body

    def wait_operation(self, op_id: int, states, *, timeout: float, web: str = "web-1") -> dict:
        """Wait until an operation is in one of `states`; return it."""
        last = {}

        def reached():
            last.update(self.operation(op_id, web=web))
            return last if last["state"] in states else None

        try:
            return wait_until(reached, timeout=timeout, what=f"operation {op_id} in {states}",
                              interval=0.2)  # fmt: skip
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last {last}") from None

    def sql(self, query: str, *params):
        """Run one statement on the topology's database; return its rows (or [])."""
        import psycopg

        with psycopg.connect(self.pg.url(), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def _login(self, web: str) -> str:
        """Log the superuser in through the admin's login form; return the session cookie."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(self.url(web, "/admin/login/"), timeout=30).read().decode()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode(
            {"username": ADMIN_USER, "password": ADMIN_PASSWORD,
             "csrfmiddlewaretoken": csrf, "next": "/admin/"}
        ).encode()  # fmt: skip
        opener.open(self.url(web, "/admin/login/?next=/admin/"), data=form, timeout=30).read()
        cookies = {c.name: c.value for c in jar}
        assert "sessionid" in cookies, "the admin login did not set a session"
        return cookies["sessionid"]


def reap_now(topology: Topology) -> None:
    """Make the reaper of dead workers run now, as bare qclusters reap.

    The clusters here are bare `manage.py qcluster` processes (the deploy guide allows
    them): their reaper is django-q2's once-a-minute schedule `models_app.tasks.reap` (and
    a reap when a worker starts). This makes the schedule due at once, as if its minute had
    passed; a cluster's scheduler (each looks every 30 s) enqueues it and a worker runs it.
    A host under `manage.py run` (`--no-web` on a worker host) reaps every 2 s by itself:
    tests/models_app/test_supervisor.py proves a web host reaping a dead worker host's
    download within OPERATION_HEARTBEAT_STALE + 5 s. The same task runs the sweep that
    enqueues again queued operations whose task was lost (`operations_requeue`), as the
    supervisor's tick does.
    """
    moved = topology.sql(
        "UPDATE django_q_schedule SET next_run = now() - interval '1 second' "
        "WHERE name = 'modelyard-reaper' RETURNING id"
    )
    assert moved, "the reaper's schedule is missing"


# The longest reap_now() can take today: the stale threshold, one scheduler look (30 s, a
# little more on a busy machine), the task's trip through the queue.
def reap_timeout(topology: Topology) -> float:
    return topology.stale + 45


class LiveWatcher:
    """One websocket client of the live consumer, read by a task of its own.

    Every message is kept with the time it arrived. Waits look at what arrived, never cut
    a frame in half: only the pump reads the socket.
    """

    def __init__(self, web: str, client):
        import asyncio

        self.web = web
        self.client = client
        self.messages: list[tuple[float, dict]] = []
        self.closed = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pump())

    @classmethod
    async def connect(cls, topology: Topology, web: str) -> LiveWatcher:
        from tests.models_app.test_live_processes import WebsocketClient

        client = await WebsocketClient.connect(topology.web_ports[web], cookie=topology.cookie)
        watcher = cls(web, client)
        await watcher.wait(lambda w: w.messages, timeout=15, what="the snapshot")
        assert watcher.messages[0][1]["type"] == "snapshot", watcher.messages[0]
        return watcher

    async def _pump(self) -> None:
        try:
            while True:
                message = await self.client.receive()
                if message is None:
                    return
                self.messages.append((time.monotonic(), message))
                self._changed.set()
        finally:
            self.closed = True
            self._changed.set()

    async def wait(self, predicate, *, timeout: float, what: str):
        """Return the first truthy `predicate(self)`, looked at on every message."""
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            if value := predicate(self):
                return value
            if self.closed:
                raise AssertionError(f"{self.web}: the server closed the connection before {what}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.web}: no {what} within {timeout} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def quiet(self, seconds: float, *, timeout: float = 15) -> None:
        """Wait until nothing has arrived for `seconds` (a late duplicate would show here)."""
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.messages[-1][0] if self.messages else 0.0
            left = last + seconds - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)

    def operation_updates(self, op_id: int, *, after: float = 0.0) -> list[tuple[float, dict]]:
        return [
            (t, m["operation"])
            for t, m in self.messages
            if t > after and m["type"] == "operation" and m["operation"]["id"] == op_id
        ]

    def end_states(self, op_id: int) -> list[str]:
        return [op["state"] for _, op in self.operation_updates(op_id) if op["state"] in TERMINAL]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
        self._task.cancel()


TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
