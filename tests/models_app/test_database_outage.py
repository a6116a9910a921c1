"""A running operation's writes survive a connection cut by the database (a restart's blip).

The local PostgreSQL stays up: pg_terminate_backend cuts a connection the way a restart
does (AdminShutdown on its next statement). The outage that lasts is a write that always
raises: the shared server cannot be stopped here.
"""

import pytest
from django.db import OperationalError, connection, transaction

from models_app import services
from models_app.models import Event, Operation
from models_app.services.operations import operation_finish
from models_app.services.progress import ProgressReporter, heartbeat_write, write_retried
from tests.factories import ModelFactory
from tests.processes import backends_terminate, operation_thread, wait_until

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="pg_terminate_backend is PostgreSQL's"
)


def cut_own_connection() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backends_terminate([cursor.fetchone()[0]])


def other_backends() -> list[int]:
    """The test database's other client connections (a worker thread's)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return [pid for (pid,) in cursor.fetchall()]


@postgres_only
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_progress_heartbeat_and_end_state_are_written_over_a_cut_connection():
    op = Operation.objects.create(
        model=ModelFactory(), kind="download", state="running", bytes_total=1000
    )
    reporter = ProgressReporter(op, interval=0)
    reporter.tick(100)

    cut_own_connection()
    reporter.tick(400)
    assert Operation.objects.get(pk=op.pk).bytes_done == 400

    cut_own_connection()
    assert heartbeat_write(operation_id=op.pk) is True

    cut_own_connection()
    assert operation_finish(operation=op, state="succeeded", result={"files": 1}) is True
    op.refresh_from_db()
    assert op.state == "succeeded" and op.finished_at
    assert Event.objects.filter(operation=op, kind="completed").count() == 1


@postgres_only
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_write_whose_connection_keeps_dying_fails_after_its_tries():
    tries = []

    def write():
        tries.append(1)
        cut_own_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    with pytest.raises(OperationalError):
        write_retried(write, what="a test write", delays=(0.01, 0.02))
    assert len(tries) == 3
    # Inside a transaction the caller's transaction is lost: no retry, the error goes up.
    tries.clear()
    with pytest.raises(OperationalError), transaction.atomic():
        write_retried(write, what="a test write", delays=(0.01, 0.02))
    assert len(tries) == 1


@pytest.mark.django_db(transaction=True)
def test_an_error_on_a_working_connection_is_not_retried():
    tries = []

    def write():
        tries.append(1)
        raise OperationalError("database is locked")  # SQLite's, after its busy timeout

    with pytest.raises(OperationalError):
        write_retried(write, what="a test write", delays=(0.01, 0.02))
    assert len(tries) == 1


@postgres_only
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_download_whose_connection_is_cut_goes_on_to_the_end(hub, settings):
    settings.OPERATION_PROGRESS_INTERVAL = 0.1
    size = 3 * 1024 * 1024  # tests/conftest.py: acme/tiny-embed's model.safetensors
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=1_000_000)
    model = ModelFactory(
        key="tiny-embed", repo_id="acme/tiny-embed", download_size=None,
        allow_patterns=["*.json", "*.safetensors", "1_Pooling/"],
    )  # fmt: skip
    op = services.download_start(model=model).operation
    thread, outcome = operation_thread(op.id)
    try:
        wait_until(
            lambda: 0.1 * size < Operation.objects.get(pk=op.pk).bytes_done < 0.6 * size,
            timeout=20, what="10% of the download", interval=0.02,
        )  # fmt: skip
        pids = other_backends()
        assert pids, "the worker thread holds no connection"
        backends_terminate(pids)
    finally:
        thread.join(timeout=30)
    assert outcome["state"] == "succeeded", outcome
    op.refresh_from_db()
    assert (op.state, op.attempts, op.bytes_done) == ("succeeded", 1, op.bytes_total)
    assert hub.bytes_sent("model.safetensors") == size  # one transfer, never started over
