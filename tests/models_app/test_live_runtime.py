"""Runtime messages on the live websocket: the snapshot, the relay, a publish, Redis.

As in test_live.py: Channels' communicator drives the real application; a row written
without a publish stands in for the runtime supervisor in its own process.
"""

import asyncio
import itertools
import os
import socket
from datetime import timedelta

import pytest
from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from django.utils import timezone

from models_app.consumers import MIN_INTERVAL
from models_app.models import ProcessHeartbeat, RuntimeInstance
from models_app.services.events import runtime_publish
from tests.factories import ModelFactory
from tests.models_app.test_live import connected, drain, session_cookie

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def close_consumer_thread_connections():
    """Close the connection of the thread that runs consumers' ORM calls (see test_live.py)."""
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def root_cookie(superuser):
    return session_cookie(superuser)


def gguf_model(key="live-llm"):
    return ModelFactory(key=key, type="llm", gguf_file=f"{key}.gguf", allow_patterns=[])


def loaded(model=None, **fields):
    """Write an instance row as the runtime supervisor's process would (no publish here)."""
    values = {
        "host": "test-host", "state": "loading", "secret": "s", "n_ctx": 4096, "n_threads": 2,
        "keep_alive": 300, "memory_estimate": 300 * 1024**2,
    }  # fmt: skip
    values.update(fields)
    return RuntimeInstance.objects.create(model=model or gguf_model(), **values)


def runtime_messages(got):
    return [m for _, m in got if m["type"] == "runtime"]


async def test_snapshot_includes_the_runtime(root_cookie):
    instance = await database_sync_to_async(loaded)(state="ready", rss=100)
    ws, snapshot = await connected(root_cookie)
    assert set(snapshot["runtime"]) == {"hosts", "instances"}
    [payload] = snapshot["runtime"]["instances"]
    assert payload["id"] == instance.id and payload["model"] == "live-llm"
    assert payload["state"] == "ready" and payload["rss"] == 100
    assert await ws.receive_nothing(timeout=0.5)  # the relay was primed with it
    await ws.disconnect()


async def test_relay_sends_an_instance_made_elsewhere_then_each_change_then_its_end(root_cookie):
    model = await database_sync_to_async(gguf_model)()
    ws, snapshot = await connected(root_cookie)
    assert snapshot["runtime"]["instances"] == []

    instance = await database_sync_to_async(loaded)(model)
    got = runtime_messages(await drain(ws, 0.5, until=lambda got: len(got) >= 1))
    assert len(got) == 1
    assert [(i["model"], i["state"]) for i in got[0]["runtime"]["instances"]] == [
        ("live-llm", "loading")
    ]

    def ready():  # as load_execute writes it: an update() that leaves updated_at alone
        RuntimeInstance.objects.filter(pk=instance.pk).update(
            state="ready", port=40123, rss=123 * 1024**2, expires_at=timezone.now()
        )

    await database_sync_to_async(ready)()
    got = runtime_messages(await drain(ws, 0.5, until=lambda got: len(got) >= 1))
    assert len(got) == 1
    [shown] = got[0]["runtime"]["instances"]
    assert shown["state"] == "ready" and shown["rss"] == 123 * 1024**2

    await database_sync_to_async(RuntimeInstance.objects.filter(pk=instance.pk).delete)()
    got = runtime_messages(await drain(ws, 0.5, until=lambda got: len(got) >= 1))
    assert len(got) == 1 and got[0]["runtime"]["instances"] == []
    await ws.disconnect()


async def test_relay_sends_a_runtime_supervisor_that_starts_but_not_each_heartbeat(root_cookie):
    ws, snapshot = await connected(root_cookie)
    assert snapshot["runtime"]["hosts"] == []
    now = timezone.now()
    beat = await database_sync_to_async(ProcessHeartbeat.objects.create)(
        role="runtime", host="new-host", pid=os.getpid(), started_at=now, beat_at=now,
        facts={"threads": 2, "budget": 1024**3},
    )  # fmt: skip
    got = runtime_messages(await drain(ws, 0.5, until=lambda got: len(got) >= 1))
    assert [h["host"] for h in got[0]["runtime"]["hosts"]] == ["new-host"]
    assert got[0]["runtime"]["hosts"][0]["threads"] == 2

    later = now + timedelta(seconds=1)
    await database_sync_to_async(ProcessHeartbeat.objects.filter(pk=beat.pk).update)(beat_at=later)
    assert await ws.receive_nothing(timeout=0.6)
    await ws.disconnect()


async def test_a_publish_and_the_relay_deliver_one_change_once(root_cookie):
    model = await database_sync_to_async(gguf_model)()
    ws, _ = await connected(root_cookie)

    def load_and_publish():  # what a request to this daphne process does
        loaded(model, state="ready")
        runtime_publish()

    await database_sync_to_async(load_and_publish)()
    got = runtime_messages(await drain(ws, 1.0, until=lambda got: len(got) >= 1))
    assert len(got) == 1 and got[0]["runtime"]["instances"][0]["state"] == "ready"
    await ws.disconnect()


async def test_a_publish_of_what_was_sent_already_is_dropped(root_cookie):
    await database_sync_to_async(loaded)(state="ready")
    ws, _ = await connected(root_cookie)
    await database_sync_to_async(runtime_publish)()
    assert await ws.receive_nothing(timeout=0.6)
    await ws.disconnect()


async def test_a_burst_of_requests_is_coalesced_to_the_newest_picture(root_cookie):
    instance = await database_sync_to_async(loaded)(state="ready")
    ws, _ = await connected(root_cookie)

    def requests():  # ten requests served in a row by this process, each one published
        for n in range(1, 11):
            RuntimeInstance.objects.filter(pk=instance.pk).update(requests_served=n)
            runtime_publish()

    # Receive while the burst runs: a message read only after it would carry a late
    # arrival time, and the gap to the held one would look shorter than it was.
    sender = asyncio.ensure_future(database_sync_to_async(requests)())
    got = await drain(
        ws,
        0.8,
        until=lambda got: got and got[-1]["runtime"]["instances"][0]["requests_served"] == 10,
    )
    await sender
    assert got[-1][1]["runtime"]["instances"][0]["requests_served"] == 10
    # The first goes at once, the newest when the interval is up: the relay, which may
    # have read a picture in between, can add one more, never one per request.
    assert 1 <= len(got) <= 3, [m["runtime"]["instances"][0]["requests_served"] for _, m in got]
    assert all(b - a >= MIN_INTERVAL - 0.01 for (a, _), (b, _) in itertools.pairwise(got))
    await ws.disconnect()


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def test_with_redis_a_publish_reaches_the_client_without_a_relay(root_cookie, settings):
    from models_app import live

    if not await asyncio.get_running_loop().run_in_executor(None, redis_answers):
        pytest.skip("no Redis answers on 127.0.0.1:6379")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/6"]},
        }
    }
    model = await database_sync_to_async(gguf_model)()
    ws, _ = await connected(root_cookie)
    assert not live.relay_needed(get_channel_layer())

    def load_and_publish():  # the runtime supervisor's process, publishing through Redis
        loaded(model, state="ready")
        runtime_publish()

    await database_sync_to_async(load_and_publish)()
    message = await ws.receive_json_from(timeout=5)
    assert message["type"] == "runtime"
    assert message["runtime"]["instances"][0]["model"] == "live-llm"
    await ws.disconnect()
