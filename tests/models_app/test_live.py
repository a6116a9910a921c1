"""The live-updates websocket in process: auth, snapshot, updates, coalescing, the relay.

Channels' WebsocketCommunicator drives `config.asgi.application` with the in-memory layer
(the default setup). The relay runs here as it runs in daphne; a row written without a
publish stands in for the worker in its own process.
"""

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest
from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.db.models.functions import Now
from django.test import Client
from django.utils import timezone

from config.asgi import application
from models_app.consumers import MAX_IN_WINDOW, MIN_INTERVAL, WINDOW
from models_app.models import ActiveModel, Operation, StoreScan
from models_app.services import model_activate
from models_app.services.events import model_publish, operation_publish
from tests.factories import InstallationFactory, ModelFactory, OperationFactory

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

OP_FIELDS = {
    "id", "model", "model_id", "kind", "state", "bytes_done", "bytes_total", "speed",
    "eta_seconds", "error_code", "error_message", "cancel_requested", "heartbeat_at",
    "started_at", "finished_at",
}  # fmt: skip
CACHE_FIELDS = {
    "total_bytes", "managed_bytes", "unmanaged_bytes", "partial_bytes", "free_disk_bytes",
    "quota_bytes",
}  # fmt: skip
MODEL_FIELDS = {"key", "type", "installed", "is_active", "size_on_disk"}


@pytest.fixture(autouse=True)
def close_consumer_thread_connections():
    """Close the connection of the thread that runs consumers' and tests' ORM calls.

    Channels' communicator turns database_sync_to_async's connection cleanup off while it
    runs; PostgreSQL would refuse to drop a test database that the idle thread still holds.
    """
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    """A fresh in-memory layer per test (changing the setting drops the cached layer)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.fixture
def root_cookie(superuser):
    return session_cookie(superuser)


def communicator(cookie: str | None = None, origin: str | None = "http://127.0.0.1:8000"):
    headers = []
    if origin:
        headers.append((b"origin", origin.encode()))
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/live/", headers=headers)


async def connected(cookie: str) -> tuple[WebsocketCommunicator, dict]:
    """Connect as a superuser; return the communicator and the snapshot."""
    ws = communicator(cookie)
    ok, _ = await ws.connect(timeout=5)
    assert ok
    snapshot = await ws.receive_json_from(timeout=5)
    assert snapshot["type"] == "snapshot"
    return ws, snapshot


async def drain(
    ws: WebsocketCommunicator,
    seconds: float,
    *,
    until: Callable[[list[dict]], bool],
    timeout: float = 10,
) -> list[tuple[float, dict]]:
    """Collect every message, each with the loop time it arrived, until `until(messages)`
    holds (within `timeout`), then for `seconds` more.

    The messages a test expects are waited for, however slow the machine; the quiet
    `seconds` after them are where one too many (a second copy, a held update sent late)
    would show. Polls with receive_nothing: a receive that times out cancels the application.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    waiting = True
    got = []
    while True:
        if waiting and until([m for _, m in got]):
            waiting, end = False, loop.time() + seconds
        left = end - loop.time()
        if left <= 0:
            break
        if await ws.receive_nothing(timeout=min(0.01, left), interval=0.002):
            continue
        got.append((loop.time(), await ws.receive_json_from()))
    assert not waiting, f"the expected messages did not arrive in {timeout} s: {got}"
    return got


def running_op(**fields):
    model = ModelFactory(key=fields.pop("key", "live-model"))
    now = timezone.now()
    return OperationFactory(
        model=model, state="running", started_at=now, heartbeat_at=now, bytes_total=1000,
        **fields,
    )  # fmt: skip


# --- who may connect -------------------------------------------------------------------


async def test_anonymous_is_accepted_then_closed_4401():
    ws = communicator(cookie=None)
    ok, _ = await ws.connect()
    assert ok  # accepted first, so the browser sees the close code
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4401}


async def test_non_superuser_is_accepted_then_closed_4403(user):
    ws = communicator(cookie=await database_sync_to_async(session_cookie)(user))
    ok, _ = await ws.connect()
    assert ok
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}


@pytest.mark.parametrize("origin", ["http://evil.example", None])
async def test_foreign_or_missing_origin_is_refused_before_the_handshake(root_cookie, origin):
    ws = communicator(root_cookie, origin=origin)
    ok, _ = await ws.connect()
    assert not ok  # daphne answers the handshake with 403
    await ws.disconnect()


async def test_a_start_that_fails_closes_1011_and_leaves_no_client_counted(
    root_cookie, monkeypatch
):
    from models_app import live

    # A database outage at connect cannot be made here on demand: the snapshot read fails.
    def database_away():
        raise RuntimeError("database away")

    monkeypatch.setattr(live, "live_snapshot", database_away)
    ws = communicator(root_cookie)
    ok, _ = await ws.connect()
    assert ok
    assert await ws.receive_output(timeout=3) == {"type": "websocket.close", "code": 1011}
    assert live._relay is None  # the relay stopped with its only client


async def test_ping_is_answered(root_cookie):
    ws, _ = await connected(root_cookie)
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=2) == {"type": "pong"}
    await ws.send_to(text_data="not json")  # ignored, not fatal
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=2) == {"type": "pong"}
    await ws.disconnect()


# --- what it sends ---------------------------------------------------------------------


async def test_snapshot_lists_active_operations_and_cache_figures(root_cookie):
    queued = await database_sync_to_async(OperationFactory)(model__key="q-model")
    running = await database_sync_to_async(running_op)(bytes_done=250)
    await database_sync_to_async(OperationFactory)(model__key="done-model", state="succeeded")

    ws, snapshot = await connected(root_cookie)
    assert list(snapshot) == ["type", "operations", "cache", "runtime"]
    ops = {op["id"]: op for op in snapshot["operations"]}
    assert set(ops) == {queued.id, running.id}  # not the finished one
    assert all(set(op) == OP_FIELDS for op in ops.values())
    assert ops[running.id]["model"] == "live-model"
    assert ops[running.id]["bytes_done"] == 250 and ops[running.id]["state"] == "running"
    assert set(snapshot["cache"]) == CACHE_FIELDS
    assert snapshot["cache"]["free_disk_bytes"] > 0
    await ws.disconnect()


async def test_a_published_update_arrives_with_the_protocol_fields(root_cookie):
    op = await database_sync_to_async(running_op)()
    ws, _ = await connected(root_cookie)
    # Publish a state the row does not hold: only the publish can deliver it.
    op.bytes_done, op.speed, op.eta_seconds = 400, 100.0, 6
    await database_sync_to_async(operation_publish)(op)
    message = await ws.receive_json_from(timeout=2)
    assert list(message) == ["type", "operation"] and message["type"] == "operation"
    assert set(message["operation"]) == OP_FIELDS
    expected = {
        "id": op.id, "model": "live-model", "model_id": op.model_id, "state": "running",
        "bytes_done": 400, "bytes_total": 1000, "speed": 100.0, "eta_seconds": 6,
    }  # fmt: skip
    assert {k: message["operation"][k] for k in expected} == expected
    assert await ws.receive_nothing(timeout=0.6)  # once, though the relay runs too
    await ws.disconnect()


async def test_operation_payload_loads_the_model_key_when_not_selected(root_cookie):
    op = await database_sync_to_async(running_op)()
    bare = await database_sync_to_async(Operation.objects.get)(pk=op.pk)  # no select_related
    ws, _ = await connected(root_cookie)
    bare.bytes_done = 10
    await database_sync_to_async(operation_publish)(bare)
    message = await ws.receive_json_from(timeout=2)
    assert message["operation"]["model"] == "live-model"
    await ws.disconnect()


async def test_rapid_updates_are_coalesced_to_the_newest(root_cookie):
    op = await database_sync_to_async(running_op)()
    ws, _ = await connected(root_cookie)

    def burst() -> float:
        started = time.monotonic()
        for i in range(1, 11):
            op.bytes_done = i * 10
            operation_publish(op)
        return time.monotonic() - started

    # Receive while the burst runs: a message read only after it would carry a late
    # arrival time, and the gap to the held one would look shorter than it was.
    sender = asyncio.ensure_future(database_sync_to_async(burst)())
    got = await drain(ws, 0.8, until=lambda got: got and got[-1]["operation"]["bytes_done"] == 100)
    assert await sender < 0.3  # ten updates within 0.3 s
    assert 1 <= len(got) <= 2, [m for _, m in got]
    assert got[-1][1]["operation"]["bytes_done"] == 100  # the newest values
    if len(got) == 2:
        assert got[1][0] - got[0][0] >= MIN_INTERVAL - 0.01  # held until the interval was up
    await ws.disconnect()


async def test_an_end_state_goes_at_once_and_drops_the_held_update(root_cookie):
    op = await database_sync_to_async(running_op)()
    ws, _ = await connected(root_cookie)
    loop = asyncio.get_running_loop()

    def updates():
        op.bytes_done = 100
        operation_publish(op)  # sent
        op.bytes_done = 200
        operation_publish(op)  # held: within MIN_INTERVAL
        op.state, op.bytes_done, op.finished_at = "succeeded", 1000, timezone.now()
        operation_publish(op)  # an end state: sent now, the held one dropped

    started = loop.time()
    await database_sync_to_async(updates)()
    got = await drain(ws, 0.6, until=lambda got: got and got[-1]["operation"]["state"] != "running")
    states = [(m["operation"]["state"], m["operation"]["bytes_done"]) for _, m in got]
    assert states == [("running", 100), ("succeeded", 1000)]
    assert got[1][0] - started < 0.2  # not held back
    await ws.disconnect()


async def test_an_older_state_after_a_newer_one_is_dropped(root_cookie):
    op = await database_sync_to_async(running_op)()
    ws, _ = await connected(root_cookie)
    stale = await database_sync_to_async(Operation.objects.select_related("model").get)(pk=op.pk)

    def newer_then_older():
        Operation.objects.filter(pk=op.pk).update(bytes_done=500, updated_at=Now())
        fresh = Operation.objects.select_related("model").get(pk=op.pk)
        operation_publish(fresh)
        stale.bytes_done = 300  # the state before, as a slow second source would send it
        operation_publish(stale)

    await database_sync_to_async(newer_then_older)()
    # The relay sees the row too: still one message.
    got = await drain(ws, 0.8, until=lambda got: len(got) >= 1)
    assert [m["operation"]["bytes_done"] for _, m in got] == [500]
    await ws.disconnect()


# --- the relay (default setup: the worker's publishes stay in the worker) -------------------


async def test_relay_delivers_a_row_written_elsewhere_once(root_cookie):
    op = await database_sync_to_async(running_op)()
    ws, _ = await connected(root_cookie)
    loop = asyncio.get_running_loop()

    def write_row():  # what the worker does in its own process, minus the publish
        Operation.objects.filter(pk=op.pk).update(
            bytes_done=640, heartbeat_at=Now(), updated_at=Now()
        )

    written = loop.time()
    await database_sync_to_async(write_row)()
    message = await ws.receive_json_from(timeout=2)
    assert loop.time() - written < 1.0
    assert message["type"] == "operation"
    assert message["operation"]["id"] == op.id and message["operation"]["bytes_done"] == 640
    assert await ws.receive_nothing(timeout=1.0)  # exactly once
    await ws.disconnect()


async def test_relay_follows_an_end_state_with_model_and_cache(root_cookie):
    op = await database_sync_to_async(running_op)()
    await database_sync_to_async(InstallationFactory)(model=op.model, size_on_disk=4096)
    ws, _ = await connected(root_cookie)

    def finish_row():  # the worker reconciles the store, then ends the operation
        StoreScan.objects.create(scanned_at=timezone.now(), managed_bytes=4096)
        Operation.objects.filter(pk=op.pk).update(
            state="succeeded", bytes_done=1000, finished_at=Now(), updated_at=Now()
        )

    await database_sync_to_async(finish_row)()
    got = [m for _, m in await drain(ws, 1.2, until=lambda got: len(got) >= 3)]
    assert [m["type"] for m in got] == ["operation", "model", "cache"]
    assert got[0]["operation"]["state"] == "succeeded"
    assert got[1]["model"] == {
        "key": "live-model", "type": "embedding", "installed": True, "is_active": False,
        "size_on_disk": 4096,
    }  # fmt: skip
    assert set(got[2]["cache"]) == CACHE_FIELDS and got[2]["cache"]["managed_bytes"] == 4096
    await ws.disconnect()


async def test_a_model_state_sent_just_before_the_end_state_follows_it_again(root_cookie):
    # The relay's poll reads the operations (still running), then the installation the
    # worker committed with the end state: the model's new state goes first, and the
    # next poll's copy after the end state must not be dropped as already sent.
    op = await database_sync_to_async(running_op)()
    await database_sync_to_async(InstallationFactory)(model=op.model, size_on_disk=4096)
    ws, _ = await connected(root_cookie)

    def publishes():
        model_publish(model_ids=[op.model_id])  # the poll that saw the installation first
        op.state, op.bytes_done, op.finished_at = "succeeded", 1000, timezone.now()
        operation_publish(op)
        model_publish(model_ids=[op.model_id])  # the poll that saw the end state

    await database_sync_to_async(publishes)()
    got = [m for _, m in await drain(ws, 0.6, until=lambda got: len(got) >= 3)]
    assert [m["type"] for m in got] == ["model", "operation", "model"]
    assert got[2]["model"]["installed"] and got[2]["model"]["key"] == "live-model"
    await ws.disconnect()


async def test_relay_stops_with_the_last_client_and_restarts_with_the_next(root_cookie):
    from models_app import live

    first, _ = await connected(root_cookie)
    second, _ = await connected(root_cookie)
    relay = live._relay
    assert relay is not None and relay.clients == 2
    await first.disconnect()
    assert relay.clients == 1 and not relay.task.done()
    await second.disconnect()
    await asyncio.wait([relay.task], timeout=5)  # the cancel is delivered at the task's next step
    assert live._relay is None and relay.task.cancelled()

    op = await database_sync_to_async(running_op)()
    third, snapshot = await connected(root_cookie)
    assert [o["id"] for o in snapshot["operations"]] == [op.id]
    await database_sync_to_async(
        Operation.objects.filter(pk=op.pk).update
    )(bytes_done=77, updated_at=Now())  # fmt: skip
    message = await third.receive_json_from(timeout=2)
    assert message["operation"]["bytes_done"] == 77
    await third.disconnect()


async def test_no_relay_with_the_redis_layer(settings):
    from models_app import live

    # With channels-redis the worker's publish reaches every daphne process itself; a
    # relay as well would deliver each update twice. (Making the layer needs no server.)
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/15"]},
        }
    }
    await live.relay_join()
    assert live._relay is None


# --- models --------------------------------------------------------------------------------


def installed_pair_with_old_active():
    """Install old-embed (the active embedding model) and new-embed; return new-embed."""
    old = InstallationFactory(model__key="old-embed").model
    new = InstallationFactory(model__key="new-embed").model
    ActiveModel.objects.create(type="embedding", model=old)
    return new


async def test_activation_sends_the_old_and_the_new_active_model(root_cookie):
    new = await database_sync_to_async(installed_pair_with_old_active)()
    ws, _ = await connected(root_cookie)
    await database_sync_to_async(model_activate)(model=new)
    got = [m for _, m in await drain(ws, 0.6, until=lambda got: len(got) >= 2)]
    assert [m["type"] for m in got] == ["model", "model"]
    by_key = {m["model"]["key"]: m["model"] for m in got}
    assert set(by_key["new-embed"]) == MODEL_FIELDS
    assert by_key["new-embed"]["is_active"] is True and by_key["new-embed"]["installed"]
    assert by_key["old-embed"]["is_active"] is False
    await ws.disconnect()


async def test_superuser_session_of_a_deleted_user_is_anonymous(root_cookie, superuser):
    await database_sync_to_async(superuser.delete)()
    ws = communicator(root_cookie)
    ok, _ = await ws.connect()
    assert ok
    assert (await ws.receive_output(timeout=2))["code"] == 4401


async def test_steady_updates_faster_than_four_a_second_keep_within_the_window(root_cookie):
    op = await database_sync_to_async(running_op)()
    ws, _ = await connected(root_cookie)

    def steady():
        # Every 0.21 s: over MIN_INTERVAL apart, but more than four a second. This sleep is
        # the producer's pace, which is what the test is about, not a wait for something:
        # the consumer limits by its event loop's clock, which offers no fake to inject.
        # The schedule is fixed, so that a late thread catches up rather than slows the rate.
        started = time.monotonic()
        for i in range(1, 13):
            op.bytes_done = i * 10
            operation_publish(op)
            time.sleep(max(0.0, started + i * 0.21 - time.monotonic()))

    sender = asyncio.ensure_future(database_sync_to_async(steady)())
    # Until the newest state arrives, then a window more: nothing may follow it.
    got = await drain(
        ws, WINDOW, until=lambda got: got and got[-1]["operation"]["bytes_done"] == 120
    )
    await sender
    times = [at for at, _ in got]
    assert max(sum(1 for u in times if t <= u < t + WINDOW - 0.01) for t in times) <= MAX_IN_WINDOW
    assert all(b - a >= MIN_INTERVAL - 0.01 for a, b in itertools.pairwise(times))
    assert got[-1][1]["operation"]["bytes_done"] == 120  # the newest state arrives
    await ws.disconnect()


async def test_relay_sends_an_activation_made_in_another_process(root_cookie):
    new = await database_sync_to_async(installed_pair_with_old_active)()
    ws, _ = await connected(root_cookie)

    def switch_row():  # what a request served by another daphne process writes
        ActiveModel.objects.filter(type="embedding").update(model=new)

    await database_sync_to_async(switch_row)()
    got = [m for _, m in await drain(ws, 0.8, until=lambda got: len(got) >= 2)]
    assert sorted((m["model"]["key"], m["model"]["is_active"]) for m in got) == [
        ("new-embed", True),
        ("old-embed", False),
    ]
    await ws.disconnect()


async def test_relay_sends_installed_state_changed_by_a_reconcile(root_cookie):
    model = await database_sync_to_async(ModelFactory)(key="found-embed")
    ws, _ = await connected(root_cookie)

    def reconcile_rows():  # a reconcile in another process found the model on disk
        InstallationFactory(model=model, size_on_disk=2048)
        StoreScan.objects.create(scanned_at=timezone.now(), managed_bytes=2048)

    await database_sync_to_async(reconcile_rows)()
    got = [m for _, m in await drain(ws, 0.8, until=lambda got: len(got) >= 2)]
    assert [m["type"] for m in got] == ["model", "cache"]
    assert got[0]["model"]["key"] == "found-embed" and got[0]["model"]["installed"] is True
    assert got[0]["model"]["size_on_disk"] == 2048
    await ws.disconnect()


async def test_a_reconcile_publishes_the_models_it_changed_and_the_cache(
    root_cookie, isolated_store
):
    from models_app.services import store_reconcile
    from tests.hub_cache import write_snapshot

    def setup():
        ModelFactory(key="found-embed", repo_id="acme/found", allow_patterns=["*"])
        busy = ModelFactory(key="busy-embed", repo_id="acme/busy", allow_patterns=["*"])
        OperationFactory(model=busy, state="running")
        for repo in ("acme/found", "acme/busy"):
            write_snapshot(isolated_store, repo, "c" * 40, {"model.safetensors": b"w" * 64})

    await database_sync_to_async(setup)()
    ws, _ = await connected(root_cookie)
    result = await database_sync_to_async(store_reconcile)()
    assert sorted(result.installed) == ["busy-embed", "found-embed"]
    got = [m for _, m in await drain(ws, 0.8, until=lambda got: len(got) >= 2)]
    # The busy model's new state waits for its operation's end state; the relay, which
    # sees the scan as well, sends nothing more.
    assert [m["type"] for m in got] == ["model", "cache"], got
    assert got[0]["model"]["key"] == "found-embed" and got[0]["model"]["installed"] is True
    await ws.disconnect()


async def test_cache_figures_differing_only_by_free_disk_jitter_are_not_resent():
    from models_app.consumers import FREE_DISK_JITTER, _cache_changed

    sent = {"total_bytes": 128, "free_disk_bytes": 10 * FREE_DISK_JITTER}
    assert _cache_changed(None, sent)
    assert not _cache_changed(sent, {**sent, "free_disk_bytes": sent["free_disk_bytes"] - 4096})
    assert _cache_changed(sent, {**sent, "free_disk_bytes": 8 * FREE_DISK_JITTER})
    assert _cache_changed(sent, {**sent, "total_bytes": 129})


def _publish_everything(op) -> int:
    """Publish an operation, its models and the store change; return the queries it made."""
    from django.test.utils import CaptureQueriesContext

    from models_app.services.events import model_publish, store_change_publish

    with CaptureQueriesContext(connections["default"]) as queries:
        operation_publish(op)
        model_publish(model_ids=[op.model_id])
        store_change_publish(model_ids=[op.model_id])
    return len(queries)


async def test_a_publish_where_no_consumer_listens_costs_no_query(root_cookie):
    # A worker's or a command's in-memory layer has no consumer: the relay of each web
    # process reads the change from the database, so the payloads are not built.
    op = await database_sync_to_async(running_op)()
    op = await database_sync_to_async(Operation.objects.get)(pk=op.pk)  # model not selected
    assert await database_sync_to_async(_publish_everything)(op) == 0
    # With a consumer joined in this process, the same calls build and send.
    ws, _ = await connected(root_cookie)
    assert await database_sync_to_async(_publish_everything)(op) > 0
    kinds = set()
    while not await ws.receive_nothing(timeout=0.3):
        kinds.add((await ws.receive_json_from())["type"])
    assert "model" in kinds  # the cache figures are the snapshot's: the consumer drops them
    await ws.disconnect()
