"""/v1/: the OpenAI-compatible endpoints. Refusals in process; serving through real processes."""

import http.client
import json
import time

import pytest

from models_app.models import ActiveModel, Installation, RuntimeInstance
from models_app.services import api_token_create
from tests.factories import ModelFactory, UserFactory
from tests.gemma import gemma_file  # noqa: F401  (a fixture)
from tests.processes import wait_until
from tests.runtime_helpers import Daphne, RuntimeProcess, install_gguf, wait_gone


def post(client, path, body, **extra):
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


@pytest.fixture
def bearer(superuser):
    raw = api_token_create(user=superuser, name="v1")[1]
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.mark.django_db
class TestRefusals:
    def test_no_credentials_is_401_in_openai_shape(self, client):
        response = post(client, "/v1/completions", {"prompt": "hi"})
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "ERR_UNAUTHENTICATED" and error["type"] == "invalid_request_error"

    def test_a_revoked_or_unknown_token_is_401(self, client):
        response = post(client, "/v1/completions", {}, HTTP_AUTHORIZATION="Bearer myd_nope")
        assert response.status_code == 401

    def test_a_session_of_a_user_who_is_not_a_superuser_is_403(self, user_client):
        assert post(user_client, "/v1/completions", {}).status_code == 403

    def test_a_session_post_without_csrf_is_403(self, superuser):
        from django.test import Client

        client = Client(enforce_csrf_checks=True)
        client.force_login(superuser)
        response = post(client, "/v1/completions", {"model": "x"})
        assert response.status_code == 403 and "CSRF" in response.json()["error"]["message"]

    def test_an_unknown_model_is_404(self, client, bearer):
        response = post(client, "/v1/completions", {"model": "no-such"}, **bearer)
        assert response.status_code == 404 and response.json()["error"]["code"] == "ERR_NOT_FOUND"

    def test_no_model_and_none_active_is_422(self, client, bearer):
        response = post(client, "/v1/chat/completions", {"messages": []}, **bearer)
        assert response.status_code == 422
        assert "activate one" in response.json()["error"]["message"]

    def test_an_llm_on_the_embeddings_endpoint_is_409(self, client, bearer):
        model = ModelFactory(type="llm", gguf_file="x.gguf", allow_patterns=[])
        response = post(client, "/v1/embeddings", {"model": model.key, "input": "x"}, **bearer)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "ERR_INCOMPATIBLE"

    def test_a_safetensors_model_is_err_format(self, client, bearer):
        model = ModelFactory(type="embedding")
        response = post(client, "/v1/embeddings", {"model": model.key, "input": "x"}, **bearer)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "ERR_FORMAT"

    @pytest.mark.parametrize(
        "raw",
        [b"{not json", b"[1, 2]", b'{"model": 7}', b'{"keep_alive": "5m"}', b'{"keep_alive": -3}'],
    )
    def test_a_bad_body_is_422(self, client, bearer, raw):
        response = client.post("/v1/completions", raw, content_type="application/json", **bearer)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "ERR_INVALID"

    def test_get_on_a_post_endpoint_is_405(self, client, bearer):
        assert client.get("/v1/completions", **bearer).status_code == 405

    def test_models_lists_installed_gguf_entries_only(self, client, bearer, settings, tmp_path):
        tiny = tmp_path / "t.gguf"
        tiny.write_bytes(b"GGUF" + b"\0" * 64)
        llm = ModelFactory(type="llm", gguf_file="t.gguf", allow_patterns=[])
        install_gguf(llm, tiny, settings.MODELS_HUB_DIR)
        ModelFactory(type="llm", gguf_file="u.gguf", allow_patterns=[])  # not installed
        body = client.get("/v1/models", **bearer).json()
        assert [m["id"] for m in body["data"]] == [llm.key]
        assert body["data"][0]["loaded"] is False and body["object"] == "list"


# --- through real processes -----------------------------------------------------------------


def sse_events(port, path, body, token, *, timeout=60):
    """POST a streaming request; return (headers, [(arrival time, event)], request time)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = time.monotonic()
    conn.request(
        "POST", path, json.dumps(body),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    response = conn.getresponse()
    assert response.status == 200, response.read()
    events, buffer = [], b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            for line in raw.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append((time.monotonic(), line[6:].decode()))
    conn.close()
    return dict(response.getheaders()), events, sent


def call(port, path, body, token, method="POST"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        method, path, json.dumps(body) if body is not None else None,
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), json.loads(data)


@pytest.fixture
def served(settings, gemma_file):  # noqa: F811
    """Gemma installed (as an LLM and as an embedding entry), a runtime and one daphne."""
    llm = ModelFactory(
        key="gemma-llm", repo_id="test/gemma-GGUF", type="llm", name="Gemma 3 270M",
        gguf_file="gemma-3-270m-q4_k_m.gguf", allow_patterns=[], context_window=32768,
    )  # fmt: skip
    embed = ModelFactory(
        key="gemma-embed", repo_id="test/gemma-embed-GGUF", type="embedding", name="Gemma embed",
        gguf_file="gemma-3-270m-q4_k_m.gguf", allow_patterns=[], context_window=32768,
    )  # fmt: skip
    install_gguf(llm, gemma_file, settings.MODELS_HUB_DIR)
    install_gguf(embed, gemma_file, settings.MODELS_HUB_DIR)
    token = api_token_create(user=UserFactory(is_superuser=True, is_staff=True), name="t")[1]
    runtime = RuntimeProcess(settings, RUNTIME_MAX_LOADED=2).start()
    web = Daphne(settings).start()
    try:
        yield {"llm": llm, "embed": embed, "token": token, "port": web.port}
    finally:
        web.stop()
        runtime.stop()
    assert runtime.runners() == []  # no runner outlives its supervisor


@pytest.mark.runtime
@pytest.mark.django_db(transaction=True)
def test_jit_load_then_streamed_and_plain_completions(served):
    llm, token, port = served["llm"], served["token"], served["port"]
    assert not RuntimeInstance.objects.exists()
    # Not loaded: the first request loads it (JIT) and says how long that took.
    status, headers, body = call(
        port, "/v1/completions",
        {"model": llm.key, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
        token,
    )  # fmt: skip
    assert status == 200, body
    assert float(headers["X-Modelyard-Load-Seconds"]) > 0
    assert body["usage"]["completion_tokens"] > 0 and body["model"] == llm.key
    instance = RuntimeInstance.objects.get(model=llm)
    assert instance.state == "ready" and instance.requests_served == 1 and instance.in_flight == 0
    installation = Installation.objects.get(model=llm)
    assert installation.use_count >= 1 and installation.last_used_at is not None

    # Loaded: no wait; the stream passes events on as the runner writes them.
    headers, events, sent = sse_events(
        port, "/v1/completions",
        {"model": llm.key, "prompt": "Once upon a time", "max_tokens": 48, "temperature": 0,
         "stream": True},
        token,
    )  # fmt: skip
    assert float(headers["X-Modelyard-Load-Seconds"]) == 0
    assert events[-1][1] == "[DONE]"
    tokens = [json.loads(e) for _, e in events[:-1]]
    assert len(tokens) >= 40 and all(t["model"] == llm.key for t in tokens)
    first, last = events[0][0], events[-2][0]
    # Not buffered: the events arrive spread over the generation, not all at its end.
    assert last - first > 0.5 * (last - sent), (first - sent, last - sent)

    # The active LLM when no model is named; chat answers 200 even when the reply is empty
    # (the test file is a base model).
    ActiveModel.objects.create(type="llm", model=llm)
    status, _, body = call(
        port, "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}, token,
    )  # fmt: skip
    assert status == 200 and body["object"] == "chat.completion", body
    assert "content" in body["choices"][0]["message"]
    instance.refresh_from_db()
    assert instance.requests_served == 3 and instance.in_flight == 0

    # A client that leaves mid-stream: the request is not left counted in flight.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST", "/v1/completions",
        json.dumps({"model": llm.key, "prompt": "Once", "max_tokens": 200, "stream": True}),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    streaming = conn.getresponse()
    assert streaming.status == 200 and streaming.read1(65536)
    assert RuntimeInstance.objects.get(pk=instance.pk).in_flight == 1
    conn.sock.close()
    conn.close()
    wait_until(
        lambda: RuntimeInstance.objects.get(pk=instance.pk).in_flight == 0,
        timeout=30,
        what="the abandoned request's end",
    )

    # keep_alive 0: unloaded once the request is answered.
    status, _, _ = call(
        port, "/v1/completions",
        {"model": llm.key, "prompt": "x", "max_tokens": 2, "keep_alive": 0}, token,
    )  # fmt: skip
    assert status == 200
    wait_gone(llm)


@pytest.mark.runtime
@pytest.mark.django_db(transaction=True)
def test_embeddings_from_an_embedding_entry(served):
    embed, token, port = served["embed"], served["token"], served["port"]
    status, _, body = call(
        port, "/v1/embeddings", {"model": embed.key, "input": ["a cat", "a kitten"]}, token
    )
    assert status == 200, body
    vectors = [d["embedding"] for d in body["data"]]
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 100
    assert RuntimeInstance.objects.get(model=embed).embedding is True
