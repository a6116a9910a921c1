#!/usr/bin/env python
"""Benchmark live progress: publish-to-browser delay, and daphne under websocket and list load.

    .venv/bin/python bench/progress.py [--seconds 60] [--clients 50] [--rate 100] [--baseline 15]
                                       [--setups default,redis] [--postgres URL]

For each setup, in one run:
  - default: SQLite, no Redis (in-memory layer; each daphne process's relay polls
    Operation.updated_at every 0.1 s), `manage.py run` as a laptop gets it: WEB_PROCESSES
    daphne processes (one per core, up to 4) on one port + one qcluster;
  - redis: REDIS_URL set (channels-redis pub/sub layer, q2 Redis broker), PostgreSQL when
    it answers (else SQLite), `manage.py run --web-processes 1` plus a second daphne
    process on a port of its own; clients and list requests are split between the two;
it holds `--clients` websocket clients on /ws/live/ and `--rate` GET /api/v1/models
requests a second (bearer token) for `--seconds`, while 4 downloads run from the test hub
(`tests/hub_server.py`, throttled through its /_control/faults endpoint so that they last
the whole time), with a qcluster of 4 workers.

The delay is measured from the row write to the websocket client's receive: for every
`running` operation message, receive time minus the message's `heartbeat_at`, which the
worker's progress write sets (Now(), the same statement as `updated_at`) just before it
publishes. It includes the relay's polling (default) or Redis (redis), the consumer's
coalescing (an update that would make more than 4 in 1.05 s, or come within 0.2 s of the
last, is held) and the client's read.

Before that, the same list requests run alone for `--baseline` seconds (no websocket, no
download), to show what the live updates add to the list's latency.

Before each setup it prints how idle the machine was (over 3 s) and every process it found
that could weigh on the figures: a daphne, qcluster, `manage.py` or hub server left over
from an earlier run, and anything else using 2 % of a core or more. After each setup it
stops the setup's whole process tree (Ctrl-C, then a kill of what is left after 30 s) and
reports how long that took, so that no setup is measured beside the previous one.

Goals (issue "Live settings page", again in the reliability issue): delay p95 < 300 ms,
zero errors, list p99 < 250 ms, in both setups on 2 cores.
Errors: a websocket that fails or closes, a client that misses an end state or gets an
update twice, a list request that fails or answers other than 200, a failed download.
The hub, daphne, the worker and the two load generators (websockets; list requests) are
separate processes on this machine.
"""

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests package: the hub server and the wait helpers

from bench.machine import machine_before  # noqa: E402
from tests.processes import free_port, wait_for_url, wait_until  # noqa: E402

PY = sys.executable
DOWNLOADS = 4
FILE = "model.safetensors"
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def cluster_processes(run: subprocess.Popen) -> int:
    """Return how many processes the qcluster that `manage.py run` started has under it."""
    try:
        for child in psutil.Process(run.pid).children():
            if "qcluster" in " ".join(child.cmdline()):
                return len(child.children(recursive=True))
    except psutil.Error:  # a process that ended between the listing and the look
        pass
    return 0


def stop_tree(procs: list[subprocess.Popen], timeout: float = 30.0) -> list[str]:
    """Stop the setup's processes (SIGINT, as Ctrl-C) and make sure none of their tree is left.

    Returns what had to be killed after `timeout`: a setup never leaves a process that the
    next one would be measured beside.
    """
    tree = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            tree += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(2)
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    killed = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            killed.append(f"{proc.pid} {' '.join(proc.cmdline())[:90]}")
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    return killed


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- a minimal websocket client (RFC 6455; the same as tests/models_app/test_live_processes) --


async def ws_connect(port: int, cookie: str):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws/live/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nCookie: sessionid={cookie}\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    if head.split(b" ", 2)[1] != b"101":
        raise ConnectionError(head.decode(errors="replace").splitlines()[0])
    return reader, writer


async def ws_receive(reader, writer) -> dict | None:
    parts = []
    while True:
        first, second = await reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", await reader.readexactly(8))
        data = await reader.readexactly(length)
        opcode = first & 0x0F
        if opcode == 0x8:
            return None
        if opcode == 0x9:
            mask = os.urandom(4)
            body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            writer.write(bytes([0x8A, 0x80 | len(data)]) + mask + body)
        elif opcode in (0x0, 0x1):
            parts.append(data)
            if first & 0x80:
                return json.loads(b"".join(parts))


def websocket_clients(ports, cookie, clients, ready, settled, stop, results) -> None:
    """Hold `clients` connections; record every operation message; report when told to stop.

    Set `ready` once every client has connected (or failed to), and `settled` once each
    connected one has had every download's end state and the model and cache messages
    that follow it.
    """

    async def one(n: int, record: dict, arrived: asyncio.Event):
        port = ports[n % len(ports)]
        connected = False
        try:
            reader, writer = await ws_connect(port, cookie)
            snapshot = await asyncio.wait_for(ws_receive(reader, writer), 30)
            assert snapshot and snapshot["type"] == "snapshot"
            connected = True
        except Exception as exc:
            record["errors"].append(f"client {n}: connect: {exc!r}")
        record["connected"] += connected
        if record["connected"] + len(record["errors"]) >= clients:
            arrived.set()  # the last one in: every client has connected or failed to
        if not connected:
            return
        seen, ended, owed = set(), set(), []  # owed: the messages an end state still awaits
        try:
            while True:
                message = await ws_receive(reader, writer)
                now = time.time()
                if message is None:
                    record["errors"].append(f"client {n}: closed by the server")
                    return
                record["counts"][message["type"]] = record["counts"].get(message["type"], 0) + 1
                if message["type"] != "operation":
                    for types in owed:
                        types.discard(message["type"])
                    record["settled"] += sum(1 for types in owed if not types)
                    owed = [types for types in owed if types]
                    if record["settled"] >= record["connected"] * DOWNLOADS:
                        settled.set()
                    continue
                op = message["operation"]
                if op["state"] in TERMINAL and op["id"] not in ended:
                    ended.add(op["id"])
                    owed.append({"model", "cache"})
                key = json.dumps(op, sort_keys=True)
                if key in seen:
                    record["duplicates"] += 1
                seen.add(key)
                record["ops"].append(
                    (n, op["id"], op["state"], now, op["heartbeat_at"], op["bytes_done"])
                )
        except asyncio.CancelledError:
            writer.close()
            raise
        except Exception as exc:
            record["errors"].append(f"client {n}: {exc!r}")

    async def main():
        record = {
            "errors": [], "connected": 0, "duplicates": 0, "ops": [], "counts": {}, "settled": 0,
        }  # fmt: skip
        arrived = asyncio.Event()
        tasks = []
        for n in range(clients):
            tasks.append(asyncio.create_task(one(n, record, arrived)))
            await asyncio.sleep(0.01)  # a page load at a time, not a thundering herd
        # The parent bounds both waits: it gives the clients 120 s to connect, and sets
        # `stop` when it is done (or fails), whatever happened.
        await arrived.wait()
        ready.set()
        await asyncio.to_thread(stop.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        results.put(record)

    asyncio.run(main())


def list_load(ports, token, rate, seconds, results) -> None:
    """Send `rate` list requests a second for `seconds`, open loop; report latencies.

    A request's latency counts from when it was due, so a slow server cannot hide its
    backlog by slowing the sender down.
    """
    latencies, errors = [], []
    lock = threading.Lock()

    def get(n: int, due: float) -> None:
        port = ports[n % len(ports)]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/models",
            headers={"Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
                status = response.status
        except Exception as exc:
            status = repr(exc)
        elapsed = time.monotonic() - due
        with lock:
            if status == 200:
                latencies.append(elapsed)
            else:
                errors.append(str(status))

    start = time.monotonic() + 0.1
    with ThreadPoolExecutor(max_workers=64) as pool:
        for n in range(int(rate * seconds)):
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(get, n, due)
    results.put({"latencies": latencies, "errors": errors})


# --- one setup ---------------------------------------------------------------------------------


def api(port: int, token: str, method: str, path: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1{path}",
        method=method,
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


SETUP = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from models_app.models import Model
from models_app.services import api_token_create
user = get_user_model().objects.create_superuser("bench", password="bench-pw")
for i in range({n}):
    Model.objects.create(
        key=f"live-{{i}}", repo_id=f"bench/live-{{i}}", type="embedding", name=f"Live {{i}}",
        source="custom", allow_patterns=["{file}", "config.json"],
    )
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(api_token_create(user=user, name="bench")[1], session.session_key)
"""


def run_setup(name: str, env: dict, daphnes: int, hub: str, args, tmp: Path) -> dict:
    before = machine_before(f"{name}: before the setup")  # before this setup starts anything
    env = dict(
        env,
        MODELS_DIR=str(tmp / f"models-{name}"),
        LEGACY_HUB_DIR=str(tmp / "no-legacy"),
        HF_ENDPOINT=hub,
        Q_WORKERS=str(DOWNLOADS),
        DOWNLOAD_DISK_RESERVE="0",
        LOG_LEVEL="WARNING",
    )
    env.pop("HF_TOKEN", None)
    manage = [PY, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    token, cookie = (
        subprocess.run(
            [*manage, "shell", "-c", SETUP.format(n=DOWNLOADS, file=FILE)],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout.split()[-2:]
    )  # fmt: skip
    ports = [free_port() for _ in range(daphnes)]
    log_path = Path(tempfile.gettempdir()) / f"modelyard-bench-progress-{name}.log"
    log = log_path.open("w")
    # One port per daphne when there are several ports; else `run` as a laptop gets it.
    web = ["--web-processes", "1"] if daphnes > 1 else []
    procs = [
        subprocess.Popen(
            [*manage, "run", "--port", str(ports[0]), *web], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )
    ]  # fmt: skip
    figures = dict(before)
    try:
        wait_for_url(f"http://127.0.0.1:{ports[0]}/admin/login/", timeout=60, proc=procs[0])
        figures["web_processes"] = sum(
            "daphne" in " ".join(child.cmdline())
            for child in psutil.Process(procs[0].pid).children(recursive=True)
        )
        for port in ports[1:]:
            procs.append(
                subprocess.Popen(
                    [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                     "config.asgi:application"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
            wait_for_url(f"http://127.0.0.1:{port}/admin/login/", timeout=60, proc=procs[-1])
        # Its start would weigh on the list-alone baseline, and the downloads would wait.
        wait_until(
            lambda: cluster_processes(procs[0]) >= DOWNLOADS + 3,
            timeout=60,
            what=f"the qcluster's sentinel, pusher, monitor and {DOWNLOADS} workers",
            interval=0.2,
            proc=procs[0],
        )

        ctx = multiprocessing.get_context("fork")
        ready, settled, stop = ctx.Event(), ctx.Event(), ctx.Event()
        ws_results, load_results = ctx.Queue(), ctx.Queue()
        # The list alone first (no websocket, no download): what the live updates add.
        baseline = ctx.Process(
            target=list_load, args=(ports, token, args.rate, args.baseline, load_results)
        )
        baseline.start()
        alone = load_results.get()
        baseline.join()
        ws = ctx.Process(
            target=websocket_clients,
            args=(ports, cookie, args.clients, ready, settled, stop, ws_results),
            daemon=True,
        )
        ws.start()
        if not ready.wait(120):
            raise SystemExit("the websocket clients did not connect within 120 s")
        started = time.monotonic()
        op_ids = [
            api(ports[i % len(ports)], token, "POST", f"/models/live-{i}/download")
            for i in range(DOWNLOADS)
        ]
        op_ids = [answer["operation"]["id"] for answer in op_ids]
        load = ctx.Process(
            target=list_load, args=(ports, token, args.rate, args.seconds, load_results)
        )
        load.start()
        http = load_results.get()
        load.join()
        states = {}

        def downloads_ended() -> bool:
            try:
                states.update(
                    {i: api(ports[0], token, "GET", f"/operations/{i}")["state"] for i in op_ids}
                )
            except OSError as exc:
                http["errors"].append(f"operation poll: {exc!r}")
            return bool(states) and all(s in TERMINAL for s in states.values())

        # A download that has not ended by then is reported as failed.
        with contextlib.suppress(TimeoutError):
            wait_until(downloads_ended, timeout=120, what="the downloads' end", interval=0.5)
        downloads_took = time.monotonic() - started
        # Every client's end states and the model and cache messages after them; a client
        # still missing one by then is counted in the report's errors.
        settled.wait(30)
        stop.set()
        record = ws_results.get()
        ws.join()
    except BaseException:
        log.flush()
        lines = log_path.read_text(errors="replace").splitlines()
        print(f"{name}: the servers' last log lines:", *lines[-40:], sep="\n  ")
        raise
    finally:
        if "stop" in locals():
            stop.set()
        stopping = time.monotonic()
        figures["killed"] = stop_tree(procs)
        figures["stop_seconds"] = time.monotonic() - stopping

    log.close()
    server_errors = sum(
        1 for line in log_path.read_text(errors="replace").splitlines() if " ERROR " in line
    )
    ops = record["ops"]
    delays = [
        (at - datetime.fromisoformat(hb).timestamp()) * 1000
        for _, _, state, at, hb, _ in ops
        if state == "running" and hb
    ]
    # Per client and operation: the most messages before the end state in any 1 s.
    streams = {}
    for client, op_id, state, at, _, _ in ops:
        if state not in TERMINAL:
            streams.setdefault((client, op_id), []).append(at)

    def busiest(window: float) -> int:
        return max(
            (sum(1 for u in ts if t <= u < t + window) for ts in streams.values() for t in ts),
            default=0,
        )

    ends = {(client, op_id) for client, op_id, state, *_ in ops if state in TERMINAL}
    missing_ends = record["connected"] * len(op_ids) - len({(c, o) for c, o in ends if o in op_ids})
    failed = [i for i, s in states.items() if s != "succeeded"]
    errors = (
        len(record["errors"]) + record["duplicates"] + missing_ends + len(http["errors"])
        + len(failed)
    )  # fmt: skip
    figures.update(
        delay_p50=percentile(delays, 50),
        delay_p95=percentile(delays, 95),
        delay_max=max(delays, default=float("nan")),
        delay_n=len(delays),
        busiest=busiest(1.0),
        busiest_095=busiest(0.95),
        ws_connected=record["connected"],
        ws_errors=record["errors"][:5],
        duplicates=record["duplicates"],
        missing_ends=missing_ends,
        messages=record["counts"],
        list_n=len(http["latencies"]),
        list_p50=percentile(http["latencies"], 50) * 1000,
        list_p99=percentile(http["latencies"], 99) * 1000,
        alone_p50=percentile(alone["latencies"], 50) * 1000,
        alone_p99=percentile(alone["latencies"], 99) * 1000,
        alone_errors=len(alone["errors"]),
        list_errors=http["errors"][:5],
        list_error_count=len(http["errors"]),
        downloads=states,
        downloads_took=downloads_took,
        errors=errors,
        server_errors=server_errors,
        log=str(log_path),
    )
    return figures


def report(results: dict, args) -> None:
    names = list(results)
    print(
        f"\nLive updates: {args.seconds} s, {args.clients} websocket clients, {args.rate} "
        f"GET /api/v1/models a second, {DOWNLOADS} downloads at once ({os.cpu_count()} CPUs)"
    )
    rows = [
        ("setup", lambda f: f["label"], ""),
        ("delay row write -> client p50 (ms)", lambda f: f"{f['delay_p50']:.0f}", ""),
        ("delay row write -> client p95 (ms)", lambda f: f"{f['delay_p95']:.0f}", "< 300"),
        ("delay max (ms)", lambda f: f"{f['delay_max']:.0f}", ""),
        ("progress messages measured", lambda f: f"{f['delay_n']}", ""),
        ("most msgs per op per client in 1 s", lambda f: f"{f['busiest']}", ""),
        ("... in 0.95 s (arrival jitter)", lambda f: f"{f['busiest_095']}", "<= 4"),
        ("websocket clients connected", lambda f: f"{f['ws_connected']}", f"{args.clients}"),
        ("list requests answered 200", lambda f: f"{f['list_n']}", ""),
        ("list latency p50 (ms)", lambda f: f"{f['list_p50']:.0f}", ""),
        ("list latency p99 (ms)", lambda f: f"{f['list_p99']:.0f}", "< 250"),
        (
            "list alone before (p50 / p99 ms, errors)",
            lambda f: f"{f['alone_p50']:.0f} / {f['alone_p99']:.0f}, {f['alone_errors']}",
            "",
        ),
        ("downloads took (s)", lambda f: f"{f['downloads_took']:.0f}", ""),
        ("machine idle before the setup (%)", lambda f: f"{f['idle_before']:.0f}", ""),
        (
            "processes before (left over / busy)",
            lambda f: f"{len(f['leftover'])} / {len(f['busy'])}",
            "0 / 0",
        ),
        (
            "stop took (s); killed after 30 s",
            lambda f: f"{f['stop_seconds']:.1f}; {len(f['killed'])}",
            "",
        ),
        ("errors", lambda f: f"{f['errors']}", "0"),
    ]
    width = 42
    print(f"  {'':<{width}}" + "".join(f"{n:>50}" for n in names) + f"{'goal':>10}")
    for label, value, goal in rows:
        print(
            f"  {label:<{width}}"
            + "".join(f"{value(results[n]):>50}" for n in names)
            + f"{goal:>10}"
        )
    for name, f in results.items():
        detail = {
            "websocket errors": f["ws_errors"], "duplicates": f["duplicates"],
            "missing end states": f["missing_ends"], "list errors": f["list_errors"],
            "list error count": f["list_error_count"], "downloads": f["downloads"],
            "messages by type": f["messages"],
            "ERROR lines in the server log": f"{f['server_errors']} ({f['log']})",
        }  # fmt: skip
        print(f"  {name}: " + "; ".join(f"{k} {v}" for k, v in detail.items()))
    for name, f in results.items():
        ok = f["delay_p95"] < 300 and f["errors"] == 0 and f["list_p99"] < 250
        print(f"  goal ({name}): {'met' if ok else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument(
        "--baseline", type=int, default=15, help="Seconds of list requests alone, first."
    )
    parser.add_argument("--setups", default="default,redis", help="Comma-separated.")
    parser.add_argument(
        "--postgres", default="postgres://postgres@127.0.0.1:5432/modelyard_bench_progress"
    )
    args = parser.parse_args()
    from tests.hub_server import make_repo

    # The downloads must outlast the load: size / rate a little over the run.
    rate = 512 * 1024
    size = rate * (args.seconds + 4)
    base_env = dict(os.environ)
    base_env.pop("REDIS_URL", None)
    results = {}
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for i in range(DOWNLOADS):
            make_repo(tmp / "repos", f"bench/live-{i}", {FILE: size, "config.json": b"{}"})
        hub_port = free_port()
        hub = subprocess.Popen(
            [PY, "tests/hub_server.py", "--root", str(tmp / "repos"), "--port", str(hub_port)],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        hub_url = f"http://127.0.0.1:{hub_port}"
        try:
            # It hashes the repositories' files before it serves.
            wait_for_url(f"{hub_url}/_control/stats", timeout=120, proc=hub)
            fault = json.dumps({"pattern": FILE, "kind": "throttle", "bytes_per_sec": rate})
            urllib.request.urlopen(
                urllib.request.Request(
                    f"{hub_url}/_control/faults", data=fault.encode(), method="POST",
                    headers={"Content-Type": "application/json"},
                )
            ).read()  # fmt: skip
            setups = args.setups.split(",")
            if "default" in setups:
                env = dict(base_env, DATABASE_URL=f"sqlite:///{tmp / 'default.sqlite3'}")
                results["default"] = run_setup("default", env, 1, hub_url, args, tmp)
                web = results["default"]["web_processes"]
                results["default"]["label"] = f"SQLite, relay, {web} daphne on 1 port"
            if "redis" not in setups:
                pass
            elif not redis_answers():
                print("redis setup skipped: nothing answers on 127.0.0.1:6379")
            else:
                results["redis"] = run_redis(base_env, hub_url, args, tmp)
        finally:
            hub.terminate()
            hub.wait()
    report(results, args)


def run_redis(base_env: dict, hub_url: str, args, tmp: Path) -> dict:
    """Run the production setup, on PostgreSQL when it answers (created and dropped here)."""
    # A Redis database of our own: the cluster's queue and the layer's groups go by name.
    env = dict(base_env, REDIS_URL=f"redis://127.0.0.1:6379/{1 + os.getpid() % 15}")
    try:
        import psycopg

        admin_url = args.postgres.rsplit("/", 1)[0] + "/postgres"
        name = args.postgres.rsplit("/", 1)[1]
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"redis setup on SQLite: PostgreSQL is not available ({exc})")
        env["DATABASE_URL"] = f"sqlite:///{tmp / 'redis.sqlite3'}"
        figures = run_setup("redis", env, 2, hub_url, args, tmp)
        figures["label"] = "SQLite, Redis, 2 daphne on 2 ports"
        return figures
    env["DATABASE_URL"] = args.postgres
    try:
        figures = run_setup("redis", env, 2, hub_url, args, tmp)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    figures["label"] = "PostgreSQL (pooled), Redis, 2 daphne on 2 ports"
    return figures


if __name__ == "__main__":
    main()
