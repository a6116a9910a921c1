"""The ORM broker's doorbell: a task queued on this host wakes the pusher instead of a poll."""

import socket

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from models_app.broker import Doorbell, DoorbellORM, bell_directory


@pytest.fixture
def bell(tmp_path):
    bell = Doorbell(tmp_path / "bells")
    assert bell.listen()
    yield bell
    bell.close()


def test_a_ring_before_the_wait_is_not_lost(bell):
    """The pusher drains, queries, then waits: a task queued in between still wakes it."""
    assert Doorbell(bell.directory).ring() == 1
    assert bell.wait(60) is True  # at once: the ring waited in the socket
    assert bell.wait(0) is False  # one wait took every ring so far


def test_drain_forgets_the_rings_a_query_will_see(bell):
    ringer = Doorbell(bell.directory)
    ringer.ring()
    ringer.ring()
    bell.drain()
    assert bell.wait(0) is False


def test_every_pusher_of_the_queue_is_rung(tmp_path):
    first, second = Doorbell(tmp_path), Doorbell(tmp_path)
    # Two pushers in one process stand for two clusters on one host (one socket per pid).
    assert first.listen()
    first._path.rename(tmp_path / "other.sock")
    assert second.listen()
    try:
        assert Doorbell(tmp_path).ring() == 2
        assert first.wait(60) and second.wait(60)
    finally:
        first.close()
        second.close()


def test_a_bell_whose_pusher_is_gone_is_removed(tmp_path):
    path = tmp_path / "4242.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(path))
    dead.close()  # the process died: its socket file stays, nobody reads it
    assert Doorbell(tmp_path).ring() == 0
    assert not path.exists()


def test_no_directory_means_no_ring_and_polling(tmp_path, monkeypatch):
    assert Doorbell(tmp_path / "nobody-listened").ring() == 0
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    bell = Doorbell(blocked)
    assert bell.listen() is False
    assert bell.wait(0.01) is False  # a plain sleep, as django-q2's ORM broker does


def test_without_unix_sockets_the_broker_polls(tmp_path, monkeypatch):
    monkeypatch.delattr(socket, "AF_UNIX")
    bell = Doorbell(tmp_path)
    assert bell.listen() is False and bell.ring() == 0


def test_each_queue_and_database_has_its_own_bells(settings):
    assert bell_directory("one") != bell_directory("two")
    first = bell_directory("one")
    another = {**settings.DATABASES[Conf.ORM], "NAME": "another.sqlite3"}
    assert bell_directory("one", another) != first
    assert len(str(first / "4194304.sock")) < 100  # room in a Unix socket's path


@pytest.mark.django_db
def test_enqueue_rings_once_the_task_is_committed(django_capture_on_commit_callbacks):
    broker = DoorbellORM(list_key="test-doorbell")
    listener = Doorbell(bell_directory(broker.list_key))
    assert listener.listen()
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            broker.enqueue("payload")
            assert listener.wait(0) is False  # the row is not visible yet: no ring
        assert len(callbacks) == 1
        assert listener.wait(60) is True
    finally:
        listener.close()


@pytest.mark.django_db
def test_dequeue_claims_what_waits_and_waits_when_nothing_does(monkeypatch):
    monkeypatch.setattr(Conf, "POLL", 0.01)
    broker = DoorbellORM(list_key="test-doorbell")
    pk = broker.enqueue("payload")
    assert broker.dequeue() == [(pk, "payload")]
    assert OrmQ.objects.get(pk=pk).lock > timezone.now()  # locked until the retry
    assert broker.dequeue() is None  # locked by this cluster now: nothing to claim
    assert broker.doorbell().listening
    broker.doorbell().close()


@pytest.mark.django_db
def test_a_bell_that_cannot_be_made_is_tried_once(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(Conf, "POLL", 0.01)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setattr("models_app.broker.bell_directory", lambda *args: blocked)
    broker = DoorbellORM(list_key="test-doorbell-blocked")
    assert broker.dequeue() is None and broker.dequeue() is None  # polled, twice
    assert not broker.doorbell().listening
    assert len([r for r in caplog.records if "no doorbell" in r.getMessage()]) == 1
