import contextlib
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command

from models_app.management.base import ModelyardCommand


class Command(ModelyardCommand):
    help = (
        "Start the whole system: sync the registry, reconcile the store, then run daphne "
        "and one qcluster worker together. Ctrl-C stops both."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="Default: HOST (127.0.0.1).")
        parser.add_argument("--port", type=int, default=None, help="Default: PORT (8000).")
        parser.add_argument("--no-worker", action="store_true", help="Run daphne only.")

    def handle(self, *args, host, port, no_worker, **options):
        host = host or settings.HOST
        port = port or settings.PORT
        call_command("registry_sync", stdout=self.stdout, stderr=self.stderr)
        call_command("models_reconcile", stdout=self.stdout, stderr=self.stderr)
        commands = {
            "daphne": [
                sys.executable, "-m", "daphne", "-b", host, "-p", str(port),
                "config.asgi:application",
            ],
        }  # fmt: skip
        if not no_worker:
            commands["qcluster"] = [sys.executable, "manage.py", "qcluster"]
        # Each child leads its own process group, so that stopping it reaches its whole
        # tree (qcluster's sentinel, pusher, monitor and workers), not just its first process.
        children = {
            name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()
        }
        self.stdout.write(f"Modelyard on http://{host}:{port}/admin/ (Ctrl-C stops it)")

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    self.stderr.write(f"{name} exited with status {child.returncode}; stopping.")
                    exit_code = child.returncode or 1
                    stopping = True
            time.sleep(0.2)
        for child in children.values():
            _signal_group(child, signal.SIGINT)
        # A worker in the middle of a download does not stop gracefully in time; killing it
        # is safe: the reaper marks its operation interrupted and retry resumes it.
        deadline = time.monotonic() + 15
        for child in children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(child, signal.SIGKILL)
        if exit_code:
            sys.exit(exit_code)


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    """Send a signal to a child's whole process group, if any of it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)
