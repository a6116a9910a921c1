"""Live updates across real processes: daphne, a qcluster worker, and a websocket client.

The default setup (no Redis: the in-memory layer, the relay polling `updated_at`) and the
production one (channels-redis, two daphne processes) each run a throttled download from
the hub fixture; the clients must see its progress, each update once, at most 4 messages
a second per operation, and the final state.
"""

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.test import Client

from models_app.services import api_token_create
from tests.factories import ModelFactory, UserFactory
from tests.processes import child_env, free_port, wait_for_url

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SIZE = 8 * 1024 * 1024  # acme/slow-embed's weights
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


# --- a minimal websocket client (RFC 6455): nothing else is installed that speaks it ------


class WebsocketClient:
    """Connect, read text frames as JSON with the time they arrived, answer pings."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, *, cookie: str, path: str = "/ws/live/"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://127.0.0.1:{port}\r\nCookie: sessionid={cookie}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = head.split(b" ", 2)[1]
        assert status == b"101", head.decode(errors="replace")
        return cls(reader, writer)

    async def _frame(self) -> tuple[int, bytes]:
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", await self.reader.readexactly(8))
        return first, await self.reader.readexactly(length)

    async def receive(self) -> dict | None:
        """Return the next JSON message, or None when the server closes."""
        parts = []
        while True:
            first, data = await self._frame()
            opcode = first & 0x0F
            if opcode == 0x8:
                return None
            if opcode == 0x9:
                self._send(0xA, data)
                continue
            if opcode in (0x1, 0x0):
                parts.append(data)
                if first & 0x80:
                    return json.loads(b"".join(parts))

    def _send(self, opcode: int, data: bytes) -> None:
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        if len(data) < 126:
            head += bytes([0x80 | len(data)])
        else:
            head += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.writer.write(head + mask + body)

    async def close(self) -> None:
        self._send(0x8, struct.pack(">H", 1000))
        self.writer.close()


async def collect_until_end(client: WebsocketClient, op_id, timeout: float) -> list:
    """Return (arrival time, message) pairs until the operation `op_id()` ends."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no end state within {timeout} s; got {[m for _, m in got]}"
        message = await asyncio.wait_for(client.receive(), left)
        assert message is not None, "the server closed the connection"
        got.append((time.monotonic(), message))
        op = message.get("operation") or {}
        if op.get("id") == op_id() and op.get("state") in TERMINAL:
            return got + await collect_tail(client)


async def collect_tail(client: WebsocketClient, *, quiet: float = 1.0, timeout: float = 10):
    """Return what follows an end state: its model and cache messages, and `quiet` s more.

    Waiting for those two messages (up to `timeout`) rather than a fixed time keeps a slow
    machine from cutting them off; the quiet second after them is where a late second copy
    of an update (the relay's, in the default setup) would show, which the checks forbid.
    """
    got, types = [], set()
    end = time.monotonic() + timeout
    settled = False
    while True:
        if not settled and {"model", "cache"} <= types:
            settled, end = True, time.monotonic() + quiet
        left = end - time.monotonic()
        if left <= 0:
            return got  # without them: check_stream names what arrived
        try:
            message = await asyncio.wait_for(client.receive(), left)
        except TimeoutError:
            return got
        assert message is not None, "the server closed the connection"
        got.append((time.monotonic(), message))
        types.add(message["type"])


# --- processes -----------------------------------------------------------------------------


def start(args: list[str], env: dict) -> subprocess.Popen:
    # Its own session, so that one killpg reaches daphne, the cluster and its workers.
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C the process (`run` stops its children in order), then kill what is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # a worker the cluster did not reap


def wait_http(port: int, proc: subprocess.Popen) -> None:
    wait_for_url(f"http://127.0.0.1:{port}/admin/login/", timeout=40, proc=proc)


def api_download(port: int, token: str, key: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/models/{key}/download",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        return json.loads(response.read())["operation"]


@pytest.fixture
def login(db):
    """Return (session cookie, API token) of a superuser, stored in the test database."""
    root = UserFactory(username="live-root", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(root)
    return client.cookies["sessionid"].value, api_token_create(user=root, name="live")[1]


@pytest.fixture
def slow_download(hub):
    """A custom entry (registry_sync keeps it) whose 8 MiB download lasts about 2 s."""
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=4_000_000)
    return ModelFactory(
        key="slow-embed", repo_id="acme/slow-embed", source="custom",
        allow_patterns=["*.json", "*.safetensors"],
    )  # fmt: skip


# --- what every client must have seen ------------------------------------------------------


def check_stream(got: list, op_id: int) -> list[dict]:
    """Assert the protocol's promises on one client's messages; return the operation's."""
    messages = [m for _, m in got]
    assert messages[0]["type"] == "snapshot"
    ops = [(t, m["operation"]) for t, m in got if m["type"] == "operation"]
    mine = [(t, op) for t, op in ops if op["id"] == op_id]
    payloads = [json.dumps(op, sort_keys=True) for _, op in mine]
    assert len(payloads) == len(set(payloads)), "an update arrived twice"
    final = mine[-1][1]
    assert final["state"] == "succeeded", final
    assert final["bytes_done"] == final["bytes_total"] >= SIZE
    progress = [op for _, op in mine if op["state"] == "running" and 0 < op["bytes_done"] < SIZE]
    assert len(progress) >= 3, [op["bytes_done"] for _, op in mine]
    done = [op["bytes_done"] for _, op in mine if op["state"] == "running"]
    assert done == sorted(done), "progress went backwards"
    # At most 4 a second: any window a bit under 1 s (network jitter) holds at most 4
    # messages before the end state, which goes at once.
    times = [t for t, op in mine if op["state"] not in TERMINAL]
    busiest = max(sum(1 for u in times if t <= u < t + 0.95) for t in times)
    assert busiest <= 4, [round(t - times[0], 3) for t in times]
    after = messages[messages.index({"type": "operation", "operation": final}) + 1 :]
    models = [m["model"] for m in after if m["type"] == "model"]
    assert any(m["key"] == "slow-embed" and m["installed"] for m in models), after
    assert any(m["type"] == "cache" for m in after), after
    return [op for _, op in mine]


# --- the default setup ---------------------------------------------------------------------


def test_default_setup_relays_worker_progress_to_the_browser(settings, login, slow_download):
    cookie, token = login
    port = free_port()
    system = start(["manage.py", "run", "--port", str(port)], child_env(settings))
    try:
        wait_http(port, system)
        op_id = None

        async def scenario():
            nonlocal op_id
            client = await WebsocketClient.connect(port, cookie=cookie)
            first = await asyncio.wait_for(client.receive(), 10)
            loop = asyncio.get_running_loop()
            op = await loop.run_in_executor(None, api_download, port, token, "slow-embed")
            op_id = op["id"]
            got = await collect_until_end(client, lambda: op_id, timeout=25)
            await client.close()
            return [(0.0, first), *got]

        got = asyncio.run(scenario())
    finally:
        stop(system)
    ops = check_stream(got, op_id)
    assert ops[0]["state"] in ("queued", "running")


# --- the production setup: channels-redis, two daphne processes -----------------------------


def redis_url() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            answered = s.recv(16).startswith(b"+PONG")
    except OSError:
        answered = False
    if not answered:
        pytest.skip("no Redis answers on 127.0.0.1:6379 (the production setup needs one)")
    # A database of our own: the cluster's queue and the layer's groups are shared by name.
    return f"redis://127.0.0.1:6379/{1 + os.getpid() % 15}"


def test_redis_setup_reaches_clients_on_two_daphne_processes(settings, login, slow_download):
    env = child_env(settings, REDIS_URL=redis_url())
    cookie, token = login
    ports = free_port(), free_port()
    # The first runs daphne and the worker; the second is a daphne process alone.
    system = start(["manage.py", "run", "--port", str(ports[0])], env)
    second = None
    try:
        wait_http(ports[0], system)
        second = start(
            ["-m", "daphne", "-b", "127.0.0.1", "-p", str(ports[1]), "config.asgi:application"],
            env,
        )
        wait_http(ports[1], second)
        op_id = None

        async def scenario():
            nonlocal op_id
            clients = [await WebsocketClient.connect(p, cookie=cookie) for p in ports]
            firsts = [await asyncio.wait_for(c.receive(), 10) for c in clients]
            loop = asyncio.get_running_loop()
            op = await loop.run_in_executor(None, api_download, ports[1], token, "slow-embed")
            op_id = op["id"]
            results = await asyncio.gather(
                *(collect_until_end(c, lambda: op_id, timeout=25) for c in clients)
            )
            for c in clients:
                await c.close()
            return [[(0.0, f), *got] for f, got in zip(firsts, results, strict=True)]

        streams = asyncio.run(scenario())
    finally:
        for proc in (second, system):
            if proc is not None:
                stop(proc)
    seen = [check_stream(got, op_id) for got in streams]
    assert seen[0][-1] == seen[1][-1]  # the same final state on both processes
