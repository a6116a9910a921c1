import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from models_app.errors import InvalidInput
from models_app.management.base import ModelyardCommand


class Command(ModelyardCommand):
    help = (
        "Start the whole system: sync the registry, reconcile the store, then run daphne "
        "(WEB_PROCESSES processes on one socket) and one qcluster. Ctrl-C stops them all."
    )
    # handle() runs the system checks itself, before it starts anything: execute() would
    # skip them under call_command, and from manage.py it would run them a second time.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None, help="Default: HOST (127.0.0.1).")
        parser.add_argument("--port", type=int, default=None, help="Default: PORT (8000).")
        parser.add_argument(
            "--web-processes",
            type=int,
            default=None,
            help="daphne processes sharing the port. Default: WEB_PROCESSES.",
        )
        parser.add_argument("--no-worker", action="store_true", help="Run daphne only.")

    def handle(self, *args, host, port, web_processes, no_worker, **options):
        host = host or settings.HOST
        port = port or settings.PORT
        web_processes = max(1, web_processes or settings.WEB_PROCESSES)
        try:
            self.check()
        except SystemCheckError as exc:
            # Django's report (each issue with its id and hint), and exit status 2 like every
            # other refusal to start (a taken port is ERR_INVALID through ModelyardCommand).
            self.stderr.write(str(exc))  # it starts "SystemCheckError: "
            sys.exit(2)
        call_command("registry_sync", stdout=self.stdout, stderr=self.stderr)
        call_command("models_reconcile", stdout=self.stdout, stderr=self.stderr)
        listener = _listen(host, port)
        if listener.family == socket.AF_INET:
            # Every daphne process accepts on the one socket, gunicorn-style: a process is
            # bound to one core by the GIL; the kernel hands each connection to one of them.
            bind = ["--fd", str(listener.fileno())]
        else:
            # daphne adopts IPv4 sockets only: one process binds the IPv6 address itself.
            listener.close()
            listener, web_processes = None, 1
            bind = ["-b", host.strip("[]"), "-p", str(port)]
        # Behind a proxy: the client's address and scheme from X-Forwarded-For / -Proto.
        proxied = ["--proxy-headers"] if settings.TRUST_PROXY_HEADERS else []
        daphne = [sys.executable, "-m", "daphne", *bind, *proxied, "config.asgi:application"]
        commands = {
            f"daphne-{n}" if web_processes > 1 else "daphne": daphne
            for n in range(1, web_processes + 1)
        }
        if not no_worker:
            commands["qcluster"] = [sys.executable, "manage.py", "qcluster"]
        # Each child leads its own process group, so that stopping it reaches its whole
        # tree (qcluster's sentinel, pusher, monitor and workers), not just its first process.
        children = {
            name: subprocess.Popen(
                cmd,
                start_new_session=True,
                pass_fds=(listener.fileno(),) if listener and cmd is daphne else (),
            )
            for name, cmd in commands.items()
        }
        if listener is not None:
            listener.close()  # the daphne processes hold it now
        self.stdout.write(
            f"Modelyard on http://{_url_host(host)}:{port}/admin/ "
            f"({web_processes} web process{'es' if web_processes > 1 else ''}; Ctrl-C stops it)"
        )

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


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port (IPv4 or IPv6), inheritable by the daphne processes.

    Binding here, before any child starts, makes a taken port one clear error.
    """
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise InvalidInput(
            f"Cannot listen on {_url_host(host)}:{port}: {exc.strerror or exc}.",
            details={"host": host, "port": port},
        ) from None
    listener.set_inheritable(True)
    return listener


def _url_host(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    """Send a signal to a child's whole process group, if any of it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)
