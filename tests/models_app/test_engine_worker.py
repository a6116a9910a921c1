"""A prune run by a real qcluster on PostgreSQL: every delete it makes executes exactly once."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Task

from models_app import services
from models_app.models import Event, Installation, Operation
from tests.factories import ModelFactory
from tests.hub_cache import write_snapshot
from tests.models_app.test_worker import start_cluster, stop_cluster
from tests.processes import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

KB = 1000


@pytest.fixture(autouse=True)
def postgres_only(db):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the one-execution proof runs on PostgreSQL (concurrent worker writes)")


def test_a_worker_runs_the_prune_once_and_each_delete_once(settings, isolated_store):
    now = timezone.now()
    for i in range(3):
        ModelFactory(key=f"p{i}", repo_id=f"acme/p{i}", allow_patterns=["*.bin"])
        write_snapshot(isolated_store, f"acme/p{i}", f"{i}" * 40, {"w.bin": bytes([i]) * 10 * KB})
    services.store_reconcile()
    for i in range(3):
        Installation.objects.filter(model__key=f"p{i}").update(
            last_used_at=now - timedelta(days=9 - i)
        )
    settings.MODELS_MAX_BYTES = 5 * KB  # the three must go

    result, plan = services.prune_start()  # autocommit: on_commit enqueues at once
    assert [i.model for i in plan.removals] == ["p0", "p1", "p2"]
    cluster = start_cluster(settings, MODELS_MAX_BYTES=str(5 * KB))
    try:
        wait_until(
            lambda: (
                Operation.objects.get(pk=result.operation.pk).state not in ("queued", "running")
            ),
            timeout=60,
            what="the prune to end",
            proc=cluster,
        )
        # The monitor records the task after it ran, then acknowledges it (deletes its OrmQ
        # row): the cluster is stopped only after both, or a SIGTERM between them leaves the
        # row (seen once in CI). A delete task queued besides would be run and recorded too.
        wait_until(
            lambda: Task.objects.exists() and not OrmQ.objects.exists(),
            timeout=30,
            what="the task recorded and acknowledged",
        )
    finally:
        stop_cluster(cluster)
    prune = Operation.objects.get(pk=result.operation.pk)
    assert prune.state == "succeeded", prune.error_message
    assert prune.result["removed"] == ["p0", "p1", "p2"]
    deletes = Operation.objects.filter(kind="delete").order_by("model__key")
    assert [(d.model.key, d.parent_id, d.attempts, d.state) for d in deletes] == [
        (f"p{i}", prune.pk, 1, "succeeded") for i in range(3)
    ]
    # One task ran (the prune's), none is left queued, and each delete started once.
    assert Task.objects.count() == 1 and OrmQ.objects.count() == 0
    for delete in deletes:
        assert Event.objects.filter(operation=delete, kind="started").count() == 1
        assert Event.objects.filter(operation=delete, kind="deleted").count() == 1
    assert not Installation.objects.exists()
