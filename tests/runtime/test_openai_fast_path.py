"""/v1's fast path (models_app/openai_asgi.py) in process, through `config.asgi.application`.

What it takes from Django (a bearer-token POST to an endpoint), what it leaves to it, and
that its answers are Django's: the same errors, the same security headers. Serving through
a real runner is tested with the real Gemma file (test_openai_api.py: JIT, streamed,
a client that leaves, keep_alive 0 all reach daphne with API tokens, so this path); here a
stand-in runner, a real HTTP server on 127.0.0.1, answers the proxied request.
"""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import SyncToAsync
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from django.db import connections
from django.test import Client

from config.asgi import application
from models_app.models import RuntimeInstance
from models_app.openai_api import MAX_BODY
from models_app.openai_asgi import openai_fast_path
from models_app.services import api_token_create
from tests.factories import ModelFactory, UserFactory

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SECURITY_HEADERS = (
    "x-content-type-options", "referrer-policy", "cross-origin-opener-policy", "x-frame-options",
)  # fmt: skip


def scope(path="/v1/completions", *, method="POST", token=None, host=b"127.0.0.1", **extra):
    headers = [(b"host", host), (b"content-type", b"application/json")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), **extra,
    }  # fmt: skip


async def call(app, scope_: dict, body: bytes = b"{}", *, chunks=None):
    """Send one request; return (status, headers dict, body, the body messages)."""
    comm = ApplicationCommunicator(app, scope_)
    for i, chunk in enumerate(chunks or [body]):
        more = chunks is not None and i < len(chunks) - 1
        await comm.send_input({"type": "http.request", "body": chunk, "more_body": more})
    start = await comm.receive_output(10)
    assert start["type"] == "http.response.start"
    messages = []
    while True:
        message = await comm.receive_output(30)
        messages.append(message)
        if not message.get("more_body"):
            break
    await comm.wait(5)
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in messages), messages


@pytest.fixture(autouse=True)
def close_sync_thread_connections():
    """Close the connection of the thread that runs the tests' ORM calls and Django's views.

    PostgreSQL would refuse to drop a test database that the idle thread still holds.
    """
    yield
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


@pytest.fixture
def token(db):
    root = UserFactory(username="fast-root", is_superuser=True, is_staff=True)
    return api_token_create(user=root, name="fast")[1]


class Seen:
    """A stand-in for Django's application: records what reached it, answers 204."""

    def __init__(self):
        self.paths = []

    async def __call__(self, scope_, receive, send):
        self.paths.append((scope_["method"], scope_["path"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


# --- what it takes, what it leaves ---------------------------------------------------------


async def test_a_bearer_post_is_served_here_and_everything_else_goes_to_django(token, settings):
    django = Seen()
    app = openai_fast_path(django)
    status, _, body, _ = await call(app, scope(token="myd_unknown"))
    assert status == 401 and json.loads(body)["error"]["code"] == "ERR_UNAUTHENTICATED"
    assert django.paths == []  # answered by the fast path
    left = [
        scope(),  # no token: a browser session's request
        scope(method="GET", token=token),  # another method
        scope("/v1/models", token=token),  # another endpoint
        scope("/api/v1/runtime", token=token),
        scope(token=token, host=b"evil.example"),  # a Host ALLOWED_HOSTS refuses: Django's 400
    ]
    for s in left:
        assert (await call(app, s))[0] == 204
    assert len(django.paths) == len(left)
    settings.SECURE_SSL_REDIRECT = True  # plain HTTP must be redirected: Django does it
    assert (await call(app, scope(token=token)))[0] == 204
    https = scope(token="myd_unknown", scheme="https")
    assert (await call(app, https))[0] == 401  # refused here
    assert len(django.paths) == len(left) + 1


async def test_its_errors_and_headers_are_djangos(token):
    # The same refusals by both paths: same status, same body, same security headers.
    client = Client()
    cases = [
        (b"Bearer myd_unknown", b'{"prompt": "hi"}'),
        (f"Bearer {token}".encode(), b"{not json"),
        (f"Bearer {token}".encode(), b'{"model": "nope", "prompt": "hi"}'),
        (f"Bearer {token}".encode(), b'{"keep_alive": -5}'),
    ]
    for authorization, body in cases:
        fast_scope = scope()
        fast_scope["headers"].append((b"authorization", authorization))
        status, headers, content, _ = await call(application, fast_scope, body)
        django = await database_sync_to_async(client.post)(
            "/v1/completions", body, content_type="application/json",
            HTTP_AUTHORIZATION=authorization.decode(),
        )  # fmt: skip
        assert status == django.status_code, (body, content)
        assert json.loads(content) == django.json()
        for name in SECURITY_HEADERS:
            assert headers.get(name) == django.headers.get(name), name
        assert headers["content-type"] == django.headers["Content-Type"]
        assert headers["x-modelyard-load-seconds"] == "0.000"


async def test_a_body_over_the_limit_is_refused_as_it_arrives(token):
    piece = b" " * (4 * 1024 * 1024)
    chunks = [b'{"prompt": "', *[piece] * (MAX_BODY // len(piece) + 1), b'"}']
    status, _, body, _ = await call(application, scope(token=token), chunks=chunks)
    assert status == 422
    error = json.loads(body)["error"]
    assert error["code"] == "ERR_INVALID" and "16 MiB" in error["message"]


# --- serving: a stand-in runner -------------------------------------------------------------


class Runner(BaseHTTPRequestHandler):
    """Answers /v1/completions as llama_cpp.server does: three SSE events, or one JSON body."""

    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Runner.seen.append((self.headers["Authorization"], body))
        if body.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for text in ("Once", " upon", " a time"):
                event = {"choices": [{"text": text}], "model": body["model"]}
                self.wfile.write(f"data: {json.dumps(event)}\r\n\r\n".encode())
                self.wfile.flush()
                time.sleep(0.05)  # a token's pace: each event is a read of its own
            self.wfile.write(b"data: [DONE]\r\n\r\n")
            self.close_connection = True
            return
        payload = json.dumps({"choices": [{"text": "ok"}], "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def runner():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Runner)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Runner.seen = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def ready_instance(port: int):
    model = ModelFactory(key="fast-llm", type="llm", gguf_file="fast.gguf")
    return RuntimeInstance.objects.create(
        model=model, host="test-host", state="ready", port=port, secret="runner-secret",
        n_ctx=512, keep_alive=300,
    )  # fmt: skip


async def test_a_loaded_model_is_served_streamed_and_plain_and_each_request_ends(token, runner):
    instance = await database_sync_to_async(ready_instance)(runner)
    request = {"model": "fast-llm", "prompt": "Once", "stream": True, "keep_alive": 60}
    status, headers, body, messages = await call(
        application, scope(token=token), json.dumps(request).encode()
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["x-accel-buffering"] == "no" and headers["x-content-type-options"] == "nosniff"
    assert body.count(b"data: ") == 4 and body.rstrip().endswith(b"[DONE]")
    # Passed on as it came: an ASGI message per event, not the stream in one piece.
    assert len([m for m in messages if m.get("body")]) >= 3
    # The runner's key, not the client's token; its alias for its model; no keep_alive.
    assert Runner.seen[-1][0] == "Bearer runner-secret"
    assert Runner.seen[-1][1]["model"] == "fast-llm" and "keep_alive" not in Runner.seen[-1][1]
    status, headers, body, _ = await call(
        application, scope(token=token), json.dumps({"model": "fast-llm", "prompt": "x"}).encode()
    )
    assert status == 200 and json.loads(body)["choices"][0]["text"] == "ok"
    assert headers["content-length"] == str(len(body))

    async def ended():
        row = await database_sync_to_async(RuntimeInstance.objects.get)(pk=instance.pk)
        return row if row.in_flight == 0 and row.requests_served == 2 else None

    for _ in range(200):  # the end of a request runs as a task of its own, just after
        if row := await ended():
            break
        await asyncio.sleep(0.02)
    assert row is not None, "the requests were not ended"
    assert row.keep_alive == 60 and row.last_request_at is not None


async def test_a_request_for_another_type_is_refused_by_the_full_way(token, runner):
    await database_sync_to_async(ready_instance)(runner)
    request = {"model": "fast-llm", "input": "x"}
    status, _, body, _ = await call(
        application, scope("/v1/embeddings", token=token), json.dumps(request).encode()
    )
    assert status == 409 and json.loads(body)["error"]["code"] == "ERR_INCOMPATIBLE"
    assert Runner.seen == []  # never reached the runner, never counted
    row = await database_sync_to_async(RuntimeInstance.objects.get)(model__key="fast-llm")
    assert row.requests_served == 0 and row.in_flight == 0


async def test_a_crash_is_a_500_in_openai_shape_with_a_reference_in_the_log(
    token, monkeypatch, caplog
):
    # A crash cannot be had for real here: the route raises what a bug would.
    def crash(**kwargs):
        raise RuntimeError("/srv/secret/path exploded")

    monkeypatch.setattr("models_app.services.runtime.runtime_route_ready", crash)
    status, headers, body, _ = await call(
        application, scope(token=token), b'{"model": "any", "prompt": "x"}'
    )
    error = json.loads(body)["error"]
    assert status == 500 and error["code"] == "ERR_INTERNAL" and error["type"] == "server_error"
    assert "/srv/secret" not in error["message"]
    reference = error["message"].split("reference ")[1].split(")")[0]
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and "exploded" in logged[0].exc_text
    assert headers["x-content-type-options"] == "nosniff"


async def test_https_answers_carry_hsts_as_django_sets_it(settings):
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    _, headers, _, _ = await call(application, scope(token="myd_unknown", scheme="https"))
    assert headers["strict-transport-security"] == "max-age=3600; includeSubDomains"
    _, plain, _, _ = await call(application, scope(token="myd_unknown"))
    assert "strict-transport-security" not in plain  # never over plain HTTP
