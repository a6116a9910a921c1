"""When the idle runtime supervisor wakes: at the soonest expiry, a heartbeat, a ring.

The supervisor sleeps in one `select` (services/runtime/supervisor.py); nothing here
starts a runner (the table keeps no spare). The rows stand for this host's instances.
"""

import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from models_app.models import ProcessHeartbeat, ProcessRole, RuntimeInstance
from models_app.runtime.processes import RunnerTable
from models_app.services.runtime.requests import Route, runtime_request_end
from models_app.services.runtime.supervisor import FIRST_REQUEST_GRACE, RuntimeSupervisor
from tests.factories import ModelFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def supervisor(settings):
    settings.HOST_NAME = "wake-host"
    settings.PROCESS_HEARTBEAT_INTERVAL = 30.0
    sup = RuntimeSupervisor(
        run_operation=lambda op_id: None, table=RunnerTable(keep_spare=False), poll=20.0
    )
    yield sup
    sup.doorbell.close()


def instance(key: str, **fields) -> RuntimeInstance:
    model = ModelFactory(key=key, type="llm", gguf_file=f"{key}.gguf", allow_patterns=[])
    values = {
        "host": "wake-host", "state": "ready", "secret": "s", "n_ctx": 4096, "n_threads": 2,
        "keep_alive": 300, "memory_estimate": 300 * 1024**2, "port": 40000,
        "address": "127.0.0.1",
    }  # fmt: skip
    values.update(fields)
    return RuntimeInstance.objects.create(model=model, **values)


def test_it_sleeps_until_the_soonest_expiry_of_its_instances(supervisor):
    now = timezone.now()
    instance("later", expires_at=now + timedelta(seconds=12))
    instance("sooner", expires_at=now + timedelta(seconds=6))
    instance("forever", expires_at=None, keep_alive=-1)
    instance("elsewhere", host="other-host", expires_at=now + timedelta(seconds=1))
    supervisor._beat_at = supervisor._acted_at = time.monotonic()
    supervisor.act()
    # 6 s (the soonest here), not the other host's 1 s, the poll's 20 s or the beat's 30 s.
    assert 4.0 < supervisor.sleep_for() <= 6.0


def test_with_nothing_expiring_it_sleeps_until_the_heartbeat_or_the_poll(supervisor):
    instance("forever", expires_at=None, keep_alive=-1)
    supervisor._beat_at = supervisor._acted_at = time.monotonic()
    supervisor.act()
    assert supervisor._expires_at == float("inf")
    assert 18.0 < supervisor.sleep_for() <= 20.0  # the poll (20 s) before the beat (30 s)
    supervisor.poll = 60.0
    assert 28.0 < supervisor.sleep_for() <= 30.0


def test_a_tick_past_the_expiry_acts_without_waiting_for_the_poll(supervisor, monkeypatch):
    acted = []
    monkeypatch.setattr(supervisor, "act", lambda: acted.append(True))
    monkeypatch.setattr(supervisor, "beat", lambda: None)
    supervisor._beat_at = supervisor._acted_at = time.monotonic()
    supervisor._expires_at = time.monotonic() + 60
    supervisor.tick()
    assert acted == []  # nothing due: no look at the rows
    supervisor._expires_at = time.monotonic() - 0.01
    supervisor.tick()
    assert acted == [True]


def test_a_thread_ending_makes_the_next_tick_act(supervisor):
    supervisor._acted_at = time.monotonic()
    supervisor.wake()  # what a finished load or unload thread does
    supervisor.wait()
    assert supervisor._acted_at == 0.0


def listening_doorbell(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    ProcessHeartbeat.objects.create(
        host=host, pid=999999, pgid=999999, role=ProcessRole.RUNTIME, beat_at=timezone.now(),
        started_at=timezone.now(), facts={"doorbell": sock.getsockname()[1]},
    )  # fmt: skip
    return sock


def route_of(row: RuntimeInstance) -> Route:
    return Route(
        instance_id=row.pk, model_key=row.model.key, model_id=row.model_id, url="http://x",
        secret="s", load_seconds=0.0,
    )  # fmt: skip


def test_a_request_that_brings_the_expiry_forward_rings_the_supervisor(
    django_capture_on_commit_callbacks,
):
    sock = listening_doorbell("wake-host")
    row = instance("shorter", in_flight=1, expires_at=timezone.now() + timedelta(seconds=300))
    with django_capture_on_commit_callbacks(execute=True):
        runtime_request_end(route=route_of(row), keep_alive=5)
    assert sock.recv(64)  # rung: it sleeps no longer until the old expiry
    row.refresh_from_db()
    assert row.keep_alive == 5 and row.in_flight == 0
    sock.close()


def test_a_request_that_pushes_the_expiry_later_does_not_ring(
    django_capture_on_commit_callbacks,
):
    sock = listening_doorbell("wake-host")
    sock.settimeout(0.3)
    row = instance("same", in_flight=1, expires_at=timezone.now() + timedelta(seconds=10))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        runtime_request_end(route=route_of(row))  # its keep-alive (300 s): later than 10 s
    assert callbacks == []
    with pytest.raises(TimeoutError):
        sock.recv(64)
    sock.close()


def test_a_fresh_instance_is_not_expired_before_its_first_request(supervisor, monkeypatch):
    # keep_alive 0 expires at the load: the JIT request that loaded it must reach it first
    # (a CI run's request met a runner already stopping: ERR_UPSTREAM).
    spawned = []
    monkeypatch.setattr(supervisor, "_spawn", lambda key, *args, **kwargs: spawned.append(key))
    now = timezone.now()
    fresh = instance("fresh", keep_alive=0, loaded_at=now, expires_at=now)
    served = instance("served", keep_alive=0, loaded_at=now, expires_at=now, requests_served=1)
    supervisor._beat_at = supervisor._acted_at = time.monotonic()
    supervisor.act()
    assert spawned == [f"instance:{served.pk}"]
    # It looks again when the grace ends, not at the poll (20 s).
    assert 8.0 < supervisor.sleep_for() <= FIRST_REQUEST_GRACE.total_seconds()
    RuntimeInstance.objects.filter(pk=fresh.pk).update(loaded_at=now - FIRST_REQUEST_GRACE)
    supervisor.act()
    assert f"instance:{fresh.pk}" in spawned
