"""Races between requests, decided by the database (real threads, real connections)."""

import threading

import pytest
from django.db import connection
from django.test import Client

from models_app import services
from models_app.errors import AlreadyRunning
from models_app.models import Operation
from tests.factories import ModelFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL"
    ),
]


def in_threads(n, target):
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        from django.db import connection as thread_connection

        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:  # collected and asserted on below
            results[i] = exc
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_fifty_simultaneous_download_requests_make_one_operation(superuser_token):
    from django_q.models import OrmQ

    model = ModelFactory(key="popular")

    def request(i):
        client = Client(headers={"Authorization": f"Bearer {superuser_token}"})
        response = client.post("/api/v1/models/popular/download")
        return response.status_code, response.json()["operation"]["id"]

    results = in_threads(50, request)
    assert all(isinstance(r, tuple) for r in results), results
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 49 + [202]
    assert len({op_id for _, op_id in results}) == 1
    assert Operation.objects.filter(model=model).count() == 1
    assert OrmQ.objects.count() == 1  # one task: one transfer


@pytest.mark.parametrize("round_", range(5))
def test_download_and_delete_racing_accept_exactly_one(round_):
    model = ModelFactory()
    kinds = ["download", "delete"] * 4

    def start(i):
        return services.operation_start(model=model, kind=kinds[i])

    results = in_threads(len(kinds), start)
    created = [r for r in results if not isinstance(r, Exception) and r.created]
    assert len(created) == 1
    winner = created[0].operation.kind
    for kind, result in zip(kinds, results, strict=True):
        if kind == winner:
            assert not isinstance(result, Exception)
            assert result.operation.id == created[0].operation.id
        else:
            assert isinstance(result, AlreadyRunning), result
    assert Operation.objects.filter(model=model).count() == 1
