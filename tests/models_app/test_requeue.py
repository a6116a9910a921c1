"""The sweep for lost tasks: a queued operation whose task the broker lost is enqueued again.

The default broker (django-q2's ORM broker, OrmQ rows) on the test database, and Redis
(a server of the test's own) for the list the production broker keeps.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from models_app import services, tasks
from models_app.models import Operation
from models_app.services.operations import _waiting_task_ids
from tests.factories import ModelFactory, OperationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(django_capture_on_commit_callbacks):
    """A download queued the normal way: its task is in the broker (an OrmQ row)."""
    model = ModelFactory(key="waiting", repo_id="acme/waiting")
    with django_capture_on_commit_callbacks(execute=True):
        op = services.download_start(model=model).operation
    op.refresh_from_db()
    assert op.task_id and OrmQ.objects.get().task_id() == op.task_id
    return op


def age(op: Operation, seconds: float) -> None:
    Operation.objects.filter(pk=op.pk).update(
        updated_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_queued_operation_whose_task_is_gone_is_enqueued_again(queued, settings):
    settings.OPERATION_HEARTBEAT_STALE = 60
    lost_task = queued.task_id
    OrmQ.objects.all().delete()  # what a Redis restart does to its queue
    age(queued, 61)

    assert services.operations_requeue() == [queued.pk]

    queued.refresh_from_db()
    assert queued.state == "queued" and queued.task_id != lost_task
    assert [row.task_id() for row in OrmQ.objects.all()] == [queued.task_id]
    # Its task is there now: the next sweep leaves it alone.
    age(queued, 61)
    assert services.operations_requeue() == []
    assert OrmQ.objects.count() == 1


def test_a_queued_operation_whose_task_waits_in_the_broker_is_left_alone(queued, settings):
    settings.OPERATION_HEARTBEAT_STALE = 60
    age(queued, 3600)  # a long queue: still there, still waiting its turn
    assert services.operations_requeue() == []
    assert OrmQ.objects.count() == 1


def test_an_operation_queued_just_now_is_left_alone(queued, settings):
    settings.OPERATION_HEARTBEAT_STALE = 60
    OrmQ.objects.all().delete()
    age(queued, 30)  # its task may still be on its way
    assert services.operations_requeue() == []
    assert not OrmQ.objects.exists()


def test_one_never_enqueued_is_enqueued_and_running_or_ended_ones_are_not(settings):
    settings.OPERATION_HEARTBEAT_STALE = 60
    never = OperationFactory(state="queued", task_id="")  # the broker was away
    others = [OperationFactory(state=state) for state in ("running", "succeeded", "failed")]
    for op in (never, *others):
        age(op, 61)
    assert tasks.reap()["requeued"] == [never.pk]
    assert [row.task_id() for row in OrmQ.objects.all()] == [
        Operation.objects.get(pk=never.pk).task_id
    ]


def test_the_redis_queue_is_read_for_the_waiting_task_ids(tmp_path):
    from django_q.brokers.redis_broker import Redis
    from django_q.signing import SignedPackage

    from tests.topology import RedisServer, missing_servers

    if any("redis" in m for m in missing_servers()):
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        broker = Redis(list_key="requeue-test")
        broker.connection = server.client()
        assert _waiting_task_ids(broker) == set()
        broker.enqueue(SignedPackage.dumps({"id": "first", "func": "f"}))
        broker.enqueue(b"not a signed package")
        broker.enqueue(SignedPackage.dumps({"id": "second", "func": "f"}))
        assert _waiting_task_ids(broker) == {"first", "second"}
    finally:
        server.stop()
