"""docs/deploy.md's nginx configuration, run for real in front of `manage.py run`.

The documented environment and the documented nginx server blocks, with only ports,
certificate and paths replaced: HTTP goes to HTTPS, Django knows the request came over
HTTPS, a login form posts through the proxy (CSRF origin check), the login throttle counts
the client's address (not the proxy's, not one the client claims), and the live websocket
upgrades through the proxy. Needs nginx (`apt-get install nginx`, or NGINX=/path/to/nginx).
"""

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.test import Client

from tests.factories import UserFactory
from tests.processes import child_env, free_port, wait_until
from tests.test_deploy import DEPLOY_DOC, documented_environment

ROOT = Path(__file__).resolve().parent.parent
HOST = "models.example.com"
CLIENT_ADDRESS = "127.0.0.2"  # loopback too: the proxy sees it as the client's address

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def nginx_binary():
    path = shutil.which(os.environ.get("NGINX", "nginx"))
    if not path:
        pytest.skip("nginx is not installed (apt-get install nginx, or set NGINX)")
    return path


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def modelyard(settings, tmp_path):
    """`manage.py run` (daphne only) with the documented production environment."""
    documented = documented_environment()
    host_specific = {
        "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MODELS_DIR", "DATA_DIR",
        "LEGACY_HUB_DIR", "HF_TOKEN", "HOST", "PORT",
    }  # fmt: skip
    env = child_env(
        settings,
        **{k: v for k, v in documented.items() if k not in host_specific},
        DATA_DIR=str(tmp_path / "data"),
        ENV_FILE=str(tmp_path / "no.env"),
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port), "--no-worker",
         "--web-processes", "1"],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port, proc
    finally:
        _stop(proc)


@pytest.fixture
def nginx(nginx_binary, modelyard, tmp_path):
    """nginx with the guide's server blocks; return (http port, https port)."""
    app_port, app = modelyard
    http_port, https_port = free_port(), free_port()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={HOST}", "-keyout", str(tmp_path / "key.pem"),
         "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    block = re.search(r"```nginx\n(.*?)```", DEPLOY_DOC.read_text(), flags=re.S).group(1)
    for documented, here in [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;"),
    ]:
        assert documented in block, documented
        block = block.replace(documented, here)
    block = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp_path}/cert.pem;", block)
    block = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp_path}/key.pem;", block)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n    access_log off;\n{temp}\n{block}\n}}\n"
    )
    proc = subprocess.Popen(
        [nginx_binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
         "-c", str(conf)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # Up when the login page comes back through both: nginx, then daphne behind it.
        wait_until(
            lambda: https(https_port, "GET", "/admin/login/")[0] == 200,
            timeout=60, what="200 from the login page through nginx", proc=app,
        )  # fmt: skip
        yield http_port, https_port
    finally:
        _stop(proc)


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


def https(port, method, path, *, body=None, headers=None):
    """Return (status, headers, body) of one request through nginx from CLIENT_ADDRESS."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, context=_tls(), timeout=10, source_address=(CLIENT_ADDRESS, 0)
    )
    try:
        conn.request(method, path, body=body, headers={"Host": HOST, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    except OSError:
        return 0, {}, b""
    finally:
        conn.close()


def test_the_guide_serves_https_behind_nginx(nginx):
    http_port, https_port = nginx
    plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
    plain.request("GET", "/", headers={"Host": HOST})
    answer = plain.getresponse()
    assert answer.status == 301 and answer.headers["Location"] == f"https://{HOST}/"
    # Over HTTPS Django knows it is HTTPS (no redirect of its own) and sends HSTS.
    status, headers, _ = https(https_port, "GET", "/")
    assert status == 302 and headers["Location"] == "/settings/models/"
    assert headers["Strict-Transport-Security"] == ("max-age=31536000; includeSubDomains; preload")


def test_a_login_through_the_proxy_is_counted_by_the_clients_address(nginx):
    _, https_port = nginx
    UserFactory(username="root", is_superuser=True, is_staff=True)
    status, headers, page = https(https_port, "GET", "/admin/login/")
    assert status == 200
    csrf_cookie = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"]).group(1)
    assert "secure" in headers["Set-Cookie"].lower()
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": "root", "password": "wrong", "next": "/"}
    )
    status, _, page = https(
        https_port, "POST", "/admin/login/", body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf_cookie}",
            "Origin": f"https://{HOST}", "Referer": f"https://{HOST}/admin/login/",
            "X-Forwarded-For": "198.51.100.9",  # a claim nginx overwrites
        },
    )  # fmt: skip
    assert status == 200, page[:500]  # the form again: the CSRF origin check passed
    attempt = AccessAttempt.objects.get()
    assert attempt.username == "root" and attempt.ip_address == CLIENT_ADDRESS


def test_the_live_websocket_upgrades_through_the_proxy(nginx):
    _, https_port = nginx
    admin = UserFactory(username="live-admin", is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(admin)
    cookie = client.cookies["sessionid"].value
    raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
    with _tls().wrap_socket(raw, server_hostname=HOST) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /ws/live/ HTTP/1.1\r\nHost: {HOST}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: https://{HOST}\r\nCookie: sessionid={cookie}\r\n\r\n"
            ).encode()
        )
        stream = sock.makefile("rb")
        status_line = stream.readline()
        assert b" 101 " in status_line, status_line
        while stream.readline() not in (b"\r\n", b""):
            pass
        first, second = stream.read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack(">H", stream.read(2))
        elif length == 127:
            (length,) = struct.unpack(">Q", stream.read(8))
        assert first & 0x0F == 0x1  # a text frame
        message = json.loads(stream.read(length))
    assert message["type"] == "snapshot"
