import socket
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from models_app.errors import InvalidInput
from models_app.management.base import ModelyardCommand
from models_app.services.runtime.supervisor import runtime_supervisor_ended
from models_app.services.supervision import supervisor_tick, workers_ended, workers_stopping
from models_app.supervisor import Child, Supervisor


class Command(ModelyardCommand):
    help = (
        "Start the whole system: sync the registry, reconcile the store, then run daphne "
        "(WEB_PROCESSES processes on one socket) and one qcluster, restarting any that "
        "dies. Ctrl-C or SIGTERM stops them all."
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
        parser.add_argument(
            "--no-runtime",
            action="store_true",
            help="Do not run the runtime supervisor (no model is loaded on this host). "
            "Default: RUNTIME_ENABLED.",
        )
        parser.add_argument(
            "--no-web",
            action="store_true",
            help="Run the qcluster only (a worker host), supervised and reaping like the rest.",
        )

    def handle(self, *args, host, port, web_processes, no_worker, no_web, no_runtime, **options):
        if no_web and no_worker:
            raise InvalidInput("--no-web and --no-worker leave nothing to run; give one.")
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
        listener, children = None, []
        if not no_web:
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
            fds = (listener.fileno(),) if listener is not None else ()
        qcluster = [sys.executable, "manage.py", "qcluster"]
        # The children, one line each: a process a later issue adds is one more line. The
        # qcluster's hooks interrupt its workers' operations the moment they die, and its
        # downloads when a stop begins (its workers then stop at their next progress write).
        if not no_web:
            children += [Child(name, daphne, pass_fds=fds) for name in _daphne_names(web_processes)]
        if not no_worker:
            children.append(
                Child("qcluster", qcluster, on_exit=workers_ended, on_stop=workers_stopping)
            )
        if settings.RUNTIME_ENABLED and not no_runtime:
            runtime = [sys.executable, "manage.py", "runtime"]
            children.append(Child("runtime", runtime, on_exit=runtime_supervisor_ended))
        if no_web:
            self.stdout.write("Modelyard worker host: one qcluster (Ctrl-C stops it)")
        else:
            self.stdout.write(
                f"Modelyard on http://{_url_host(host)}:{port}/admin/ "
                f"({web_processes} web process{'es' if web_processes > 1 else ''}; "
                "Ctrl-C stops it)"
            )
        try:
            # It keeps the listening socket: a daphne that it restarts accepts on it too.
            Supervisor(children, tick=supervisor_tick, stop_timeout=settings.RUN_STOP_TIMEOUT).run()
        finally:
            if listener is not None:
                listener.close()


def _daphne_names(n: int) -> list[str]:
    return [f"daphne-{i}" for i in range(1, n + 1)] if n > 1 else ["daphne"]


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
