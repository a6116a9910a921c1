"""The wait helpers themselves: deadlines, return values, and a real HTTP server to wait on."""

import http.server
import itertools
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.processes import ProcessExited, free_port, wait_for_url, wait_until


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = {"/": 200, "/starting": 503}.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):  # keep the test output to the test's own
        pass


@pytest.fixture
def http_server():
    """Serve _Handler on a free port from a thread; return the server's base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def exited_process():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(timeout=30)
    return proc


def closed_port() -> int:
    """Return a port that refuses connections (checked: nothing listens on it)."""
    port = free_port()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))
    return port


def test_free_port_can_be_bound():
    port = free_port()
    with socket.create_server(("127.0.0.1", port)) as s:
        assert s.getsockname()[1] == port


def test_wait_until_returns_the_first_truthy_value():
    answers = iter([0, None, "", "ready", "later"])
    assert wait_until(lambda: next(answers), timeout=10, what="an answer", interval=0) == "ready"
    assert next(answers) == "later"  # not called again once it held


def test_wait_until_raises_at_the_deadline_naming_what_it_waited_for():
    calls = itertools.count()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"^no the moon within 0\.3 s$"):
        wait_until(lambda: next(calls) and False, timeout=0.3, what="the moon", interval=0.05)
    took = time.monotonic() - started
    assert 0.3 <= took < 2
    assert next(calls) > 2  # it kept asking until the deadline


def test_wait_until_fails_at_once_when_the_process_exited(exited_process):
    started = time.monotonic()
    with pytest.raises(ProcessExited, match="exited with status 3 before the server") as info:
        wait_until(lambda: False, timeout=30, what="the server", proc=exited_process)
    assert info.value.returncode == 3
    assert time.monotonic() - started < 5


def test_wait_until_with_a_live_process_waits_for_the_condition():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    try:
        answers = iter([False, False, True])
        assert wait_until(lambda: next(answers), timeout=10, what="x", interval=0, proc=proc)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_wait_for_url_returns_the_status_of_a_real_server(http_server):
    assert wait_for_url(f"{http_server}/", timeout=10) == 200
    assert wait_for_url(f"{http_server}/missing", timeout=10, ok_statuses=(404,)) == 404


def test_wait_for_url_retries_other_statuses_and_names_the_last_one(http_server):
    with pytest.raises(TimeoutError, match=r"within 0\.3 s \(last: 'status 503'\)"):
        wait_for_url(f"{http_server}/starting", timeout=0.3)


def test_wait_for_url_retries_a_refused_connection_until_the_deadline():
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ConnectionRefusedError"):
        wait_for_url(f"http://127.0.0.1:{port}/", timeout=0.5)
    assert time.monotonic() - started >= 0.5


def test_wait_for_url_answers_once_a_late_server_starts():
    port = closed_port()
    result = {}
    waiter = threading.Thread(
        target=lambda: result.update(status=wait_for_url(f"http://127.0.0.1:{port}/", timeout=30))
    )
    waiter.start()
    # Nothing listens yet, so the waiter cannot have had its answer before this server.
    assert waiter.is_alive()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        waiter.join(timeout=30)
        assert result == {"status": 200}
    finally:
        server.shutdown()
        server.server_close()


def test_wait_for_url_fails_fast_when_the_server_process_exited(exited_process):
    port = closed_port()
    started = time.monotonic()
    with pytest.raises(ProcessExited) as info:
        wait_for_url(f"http://127.0.0.1:{port}/", timeout=30, proc=exited_process)
    assert info.value.returncode == 3
    assert time.monotonic() - started < 5
