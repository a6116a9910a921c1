"""Process heartbeats, the owner of an operation, and what the supervisor's hooks write."""

import itertools
import os
import signal
import sys
import time
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from models_app.engine import operation_run_here
from models_app.models import Event, Operation, ProcessHeartbeat, RuntimeInstance
from models_app.services import operation_start
from models_app.services.heartbeats import (
    heartbeat_group_members,
    heartbeat_keeper_start,
    heartbeat_write,
    heartbeats_prune,
)
from models_app.services.operations import (
    host_name,
    operation_claim,
    operations_interrupt_owned,
)
from models_app.services.runtime.supervisor import runtime_supervisor_ended
from models_app.services.supervision import supervisor_tick, workers_ended, workers_stopping
from models_app.supervisor import Backoff, Child, Supervisor
from tests.factories import ModelFactory, OperationFactory
from tests.processes import wait_until

pytestmark = pytest.mark.django_db


def running(kind="download", **fields) -> Operation:
    defaults = {"heartbeat_at": timezone.now(), "worker_host": host_name()}
    return OperationFactory(kind=kind, state="running", **(defaults | fields))


def test_a_claim_records_the_process_that_runs_it():
    op = operation_start(kind="download", model=ModelFactory()).operation
    claimed = operation_claim(operation_id=op.pk)
    assert (claimed.worker_host, claimed.worker_pid) == (host_name(), os.getpid())


def test_a_foreground_operation_records_this_process(settings):
    settings.MODELS_MAX_BYTES = None
    op = operation_run_here(kind="prune")
    assert (op.worker_host, op.worker_pid) == (host_name(), os.getpid())


def test_a_heartbeat_names_this_process_and_its_group():
    row = heartbeat_write(role="worker")
    assert (row.host, row.pid, row.pgid) == (host_name(), os.getpid(), os.getpgrp())
    started = psutil.Process().create_time()
    assert abs(row.started_at.timestamp() - started) < 1
    first = row.beat_at
    again = heartbeat_write(role="worker")
    assert again.pk == row.pk and again.beat_at >= first
    assert ProcessHeartbeat.objects.count() == 1


def test_a_reused_pid_takes_the_row_with_its_own_start():
    ProcessHeartbeat.objects.create(
        role="worker",
        host=host_name(),
        pid=os.getpid(),
        started_at=timezone.now() - timedelta(days=3),
        beat_at=timezone.now() - timedelta(days=3),
    )
    row = heartbeat_write(role="worker")
    assert abs(row.started_at.timestamp() - psutil.Process().create_time()) < 1
    assert ProcessHeartbeat.objects.get().started_at == row.started_at


@pytest.mark.django_db(transaction=True)
def test_the_keeper_beats_from_a_thread():
    keeper = heartbeat_keeper_start(role="runtime", interval=0.05)
    try:
        assert keeper.thread.daemon and keeper.thread.is_alive()
        assert heartbeat_keeper_start(role="runtime", interval=0.05) is keeper  # once a process
        first = ProcessHeartbeat.objects.get(pid=os.getpid()).beat_at  # written at once
        wait_until(
            lambda: ProcessHeartbeat.objects.get(pid=os.getpid()).beat_at > first,
            timeout=10,
            what="a second beat",
        )
    finally:
        keeper.stop()
    assert not keeper.thread.is_alive()


def test_prune_removes_only_long_dead_rows(settings):
    settings.OPERATION_HEARTBEAT_STALE = 60
    now = timezone.now()
    for pid, age in ((1, 601), (2, 599)):
        ProcessHeartbeat.objects.create(
            role="worker",
            host="h",
            pid=pid,
            started_at=now - timedelta(seconds=age),
            beat_at=now - timedelta(seconds=age),
        )
    assert heartbeats_prune(now=now) == 1
    assert list(ProcessHeartbeat.objects.values_list("pid", flat=True)) == [2]


def test_interrupt_owned_takes_only_those_processes_on_this_host():
    mine, other_pid, other_host = (
        running(worker_pid=101),
        running(worker_pid=102),
        running(worker_pid=101, worker_host="elsewhere"),
    )
    queued = OperationFactory(state="queued", worker_pid=101, worker_host=host_name())
    assert operations_interrupt_owned(host=host_name(), pids=[101], reason="It died.") == [mine.pk]
    states = dict(Operation.objects.values_list("pk", "state"))
    assert states == {
        mine.pk: "interrupted",
        other_pid.pk: "running",
        other_host.pk: "running",
        queued.pk: "queued",
    }
    mine.refresh_from_db()
    assert mine.error_message == "It died. Retry resumes from the partial files."
    assert mine.finished_at is not None
    event = Event.objects.get(kind="interrupted")
    assert event.operation == mine and event.message.endswith("interrupted: it died.")


def test_a_dead_cluster_takes_its_workers_found_by_their_group():
    # The supervisor saw only the cluster's leader (pid 500); its worker 501 had started since.
    ProcessHeartbeat.objects.create(
        role="worker",
        host=host_name(),
        pid=501,
        pgid=500,
        started_at=timezone.now(),
        beat_at=timezone.now(),
    )
    op = running(worker_pid=501)
    assert heartbeat_group_members(host=host_name(), leaders=[500]) == {501}
    assert workers_ended([500], "qcluster exited with status -9") == [op.pk]
    op.refresh_from_db()
    assert op.state == "interrupted"
    assert "qcluster exited with status -9" in op.error_message
    assert not ProcessHeartbeat.objects.exists()  # forgotten with its process


def runtime_host_rows() -> tuple[RuntimeInstance, Operation]:
    """A runtime supervisor (pid 600) with one model loaded (runner pid 601), another loading."""
    now = timezone.now()
    ProcessHeartbeat.objects.create(
        role="runtime", host=host_name(), pid=600, pgid=600, started_at=now, beat_at=now
    )
    instance = RuntimeInstance.objects.create(
        model=ModelFactory(type="llm"), host=host_name(), state="ready", pid=601, port=1,
        n_ctx=4096, keep_alive=300, secret="s",
    )  # fmt: skip
    return instance, running(kind="load", model=ModelFactory(type="llm"), worker_pid=600)


def test_a_runner_that_ended_leaves_the_runtime_to_its_supervisor():
    # An unload stopped runner 602: `run` saw a process of the runtime's tree end. Cleaning
    # up then killed the loaded runners and interrupted the load that followed the unload.
    instance, load = runtime_host_rows()
    assert runtime_supervisor_ended([602], "a process of runtime ended") is None
    assert RuntimeInstance.objects.filter(pk=instance.pk, state="ready").exists()
    load.refresh_from_db()
    assert load.state == "running"


def test_a_dead_runtime_supervisor_leaves_no_instance_or_load():
    _, load = runtime_host_rows()
    cleaned = runtime_supervisor_ended([600, 601], "runtime exited with status -9")
    assert cleaned["instances"] == 1 and cleaned["interrupted"] == [load.pk]
    assert not RuntimeInstance.objects.exists()
    load.refresh_from_db()
    assert load.state == "interrupted" and "runtime exited with status -9" in load.error_message


def test_a_stop_interrupts_downloads_and_leaves_a_delete_to_finish():
    download, delete = running(worker_pid=7), running(kind="delete", worker_pid=8)
    assert workers_stopping([7, 8]) == [download.pk]
    assert Operation.objects.get(pk=delete.pk).state == "running"
    assert "stopped" in Operation.objects.get(pk=download.pk).error_message


def test_the_supervisor_tick_reaps_stale_operations(settings):
    settings.OPERATION_HEARTBEAT_STALE = 5
    stale = running(worker_pid=9, heartbeat_at=timezone.now() - timedelta(seconds=6))
    fresh = running(worker_pid=9)
    assert supervisor_tick() == {
        "interrupted": [stale.pk],
        "requeued": [],
        "runtime_stranded": [],
        "heartbeats_removed": 0,
    }
    assert Operation.objects.get(pk=fresh.pk).state == "running"


# --- the Supervisor itself, with plain processes ---------------------------------------------


def test_a_child_that_keeps_dying_is_restarted_with_doubling_delays():
    exits = []

    def stop_after_four():
        if len(exits) >= 4:
            supervisor.signals = 1  # what SIGTERM does

    supervisor = Supervisor(
        [
            Child(
                "failing",
                [sys.executable, "-c", "raise SystemExit(3)"],
                on_exit=lambda pids, reason: exits.append((time.monotonic(), reason)),
            ),
            Child("steady", [sys.executable, "-c", "import time; time.sleep(60)"]),
        ],
        tick=stop_after_four,
        tick_every=0.02,
        backoff=Backoff(first=0.2, longest=0.8, steady=30),
    )
    supervisor.run()
    assert [reason for _, reason in exits] == ["failing exited with status 3"] * 4
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(exits)]
    # 0.2, 0.4, 0.8 (the longest): each at least its delay; the process start adds a little.
    for gap, delay in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert gap >= delay, gaps
    assert gaps[2] < 0.8 + 5, gaps
    # The steady child lived through it all and was stopped.
    (steady,) = [r for r in supervisor.running if r.child.name == "steady"]
    assert steady.proc.returncode == -signal.SIGTERM


def test_a_child_that_ignores_its_stop_signal_is_killed_at_the_timeout():
    ignoring = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    ended = []
    supervisor = Supervisor(
        [Child("stubborn", [sys.executable, "-c", ignoring], on_exit=lambda p, r: ended.append(r))],
        tick=lambda: setattr(supervisor, "signals", 1),
        tick_every=0.5,
        stop_timeout=0.5,
    )
    supervisor.run()
    (r,) = supervisor.running
    assert r.proc.returncode == -signal.SIGKILL
    assert ended == ["stubborn was killed at stop"]


def test_a_dead_childs_orphans_are_killed_with_it():
    # The child starts a grandchild (in its group), lives long enough for the supervisor to
    # see it, then dies: the grandchild must not outlive it.
    script = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "time.sleep(1.5)"
    )
    ended = []
    supervisor = Supervisor(
        [Child("parent", [sys.executable, "-c", script], on_exit=lambda p, r: ended.append(p))],
        tick=lambda: ended and setattr(supervisor, "signals", 1),
        tick_every=0.05,
    )
    supervisor.run()
    pids = ended[0]
    assert len(pids) == 2, pids  # the child and the grandchild it saw
    gone = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=5)
    assert gone[1] == []
