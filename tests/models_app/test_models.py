"""Database facts: the one-active-operation constraint on SQLite and PostgreSQL."""

import threading

import pytest
from django.db import IntegrityError, connection, transaction

from models_app.models import Operation
from tests.factories import ModelFactory, OperationFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("first", "second"),
    [("queued", "queued"), ("running", "queued"), ("queued", "running"), ("running", "running")],
)
def test_two_active_operations_for_one_model_are_refused(first, second):
    model = ModelFactory()
    OperationFactory(model=model, state=first)
    with pytest.raises(IntegrityError), transaction.atomic():
        OperationFactory(model=model, state=second, kind="delete")


@pytest.mark.parametrize("finished", ["succeeded", "failed", "cancelled", "interrupted"])
def test_finished_operations_do_not_block_a_new_one(finished):
    model = ModelFactory()
    OperationFactory.create_batch(3, model=model, state=finished)
    OperationFactory(model=model, state="queued")
    assert Operation.objects.filter(model=model).count() == 4


def test_active_operations_on_different_models_coexist():
    OperationFactory(state="running")
    OperationFactory(state="running")
    assert Operation.objects.filter(state="running").count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs concurrent writers")
def test_concurrent_inserts_leave_exactly_one_active_operation():
    model = ModelFactory()
    barrier = threading.Barrier(8)
    outcomes = []

    def insert():
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            with transaction.atomic():
                Operation.objects.create(model=model, kind="download", state="queued")
            outcomes.append("created")
        except IntegrityError:
            outcomes.append("refused")
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=insert) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["refused"] * 7
    assert Operation.objects.filter(model=model).count() == 1
