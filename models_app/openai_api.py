"""The OpenAI-compatible endpoints under /v1/: models, chat/completions, completions, embeddings.

A thin interface over services/runtime/: authenticate (an API token, or a superuser's
session with its CSRF token: the Models page's "Try it"), find the model (`model` is a
registry key; none means the active model of the endpoint's type), let the service route
the request to the runner that has it (loading it first: JIT), and pass the runner's
answer through. A stream is passed on chunk by chunk as the runner writes it, never
buffered. `keep_alive` (seconds, -1 forever, 0 unload after this request) may be given in
the body, as Ollama takes it; it is not passed to the runner.

Every response carries `X-Modelyard-Load-Seconds`: how long this request waited for its
model to load (0 when it was loaded). Errors have OpenAI's shape,
`{"error": {"message", "type", "code", "param"}}`, with Modelyard's stable code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass

import httpx2
from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from .errors import (
    Incompatible,
    InvalidInput,
    MethodNotAllowed,
    ModelyardError,
    NotAuthenticated,
    PermissionDenied,
    UpstreamError,
)
from .models import Installation, ModelType, RuntimeInstance, RuntimeState
from .services import api_token_verify
from .services import runtime as runtime_services

logger = logging.getLogger(__name__)

LOAD_HEADER = "X-Modelyard-Load-Seconds"
MAX_BODY = 16 * 1024 * 1024
# The endpoints, the model type each serves, and the types it accepts.
ENDPOINTS = {
    "chat/completions": (ModelType.LLM, (ModelType.LLM,)),
    "completions": (ModelType.LLM, (ModelType.LLM,)),
    "embeddings": (ModelType.EMBEDDING, (ModelType.EMBEDDING, ModelType.RERANKER)),
}

# One HTTP client per event loop (a daphne process has one): connections to runners are
# kept alive and reused.
_clients: dict[int, httpx2.AsyncClient] = {}
# Request ends in progress (kept referenced until done: a task is only weakly held).
_ending: set[asyncio.Task] = set()


def _client() -> httpx2.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(id(loop))
    if client is None or client.is_closed:
        timeout = httpx2.Timeout(connect=5.0, read=None, write=30.0, pool=30.0)
        # Runners speak plain HTTP: no TLS context with the CA bundle (loading it took a
        # daphne process's first request 30-40 ms here).
        client = httpx2.AsyncClient(timeout=timeout, trust_env=False, verify=False)
        _clients[id(loop)] = client
    return client


@dataclass
class Answer:
    """What a /v1 request is answered with, before a Django response or ASGI messages."""

    status: int
    content_type: str
    load_seconds: float = 0.0
    content: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # a stream passed on chunk by chunk

    @property
    def headers(self) -> dict[str, str]:
        headers = {LOAD_HEADER: f"{self.load_seconds:.3f}"}
        if self.stream is not None:
            headers["Cache-Control"] = "no-cache"
            headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
        return headers


def error_answer(exc: ModelyardError, *, load_seconds: float = 0.0) -> Answer:
    """Return an error in OpenAI's shape, with Modelyard's stable code and details."""
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    body = {
        "error": {
            "message": exc.message,
            "type": kind,
            "code": exc.code,
            "param": None,
            "details": exc.details,
        }
    }
    return Answer(exc.status, "application/json", load_seconds, content=json.dumps(body).encode())


def _response(answer: Answer) -> HttpResponse:
    if answer.stream is not None:
        return StreamingHttpResponse(
            answer.stream, status=answer.status, content_type=answer.content_type,
            headers=answer.headers,
        )  # fmt: skip
    return HttpResponse(
        answer.content, status=answer.status, content_type=answer.content_type,
        headers=answer.headers,
    )  # fmt: skip


def _error(exc: ModelyardError) -> HttpResponse:
    return _response(error_answer(exc))


def _stream_error(exc: ModelyardError) -> bytes:
    """Return a server-sent event carrying an error in OpenAI's shape (after any partial one)."""
    body = {"error": {"message": exc.message, "type": "server_error", "code": exc.code,
                      "param": None}}  # fmt: skip
    return b"\n\ndata: " + json.dumps(body).encode() + b"\n\n"


def _authenticate(request):
    """Check the caller: an API token, or a signed-in superuser (CSRF-checked)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        token_check(header)
        return
    user = request.user
    if not user.is_authenticated:
        raise NotAuthenticated("Send `Authorization: Bearer <token>` (an API token).")
    if not user.is_superuser:
        raise PermissionDenied("Only superusers may use the runtime from a browser session.")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        reason = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
        if reason is not None:
            raise PermissionDenied("CSRF check failed: send the X-CSRFToken header.")


def token_check(authorization: str) -> None:
    """Raise unless an `Authorization: Bearer <token>` header holds a valid API token."""
    if api_token_verify(raw=authorization[7:].strip()) is None:
        raise NotAuthenticated("The API token is invalid or revoked.")


def _model_list() -> dict:
    loaded = dict(
        RuntimeInstance.objects.filter(state=RuntimeState.READY).values_list("model_id", "host")
    )
    installations = (
        Installation.objects.select_related("model")
        .filter(model__type__in=runtime_services.RUNNABLE_TYPES)
        .exclude(model__gguf_file="")
        .order_by("model__key")
    )
    return {
        "object": "list",
        "data": [
            {
                "id": i.model.key,
                "object": "model",
                "created": int(i.installed_at.timestamp()),
                "owned_by": "modelyard",
                "type": i.model.type,
                "loaded": i.model_id in loaded,
                "host": loaded.get(i.model_id),
            }
            for i in installations
        ],
    }


@csrf_exempt
async def models(request):
    """GET /v1/models: the installed GGUF models the runtime can serve, and which are loaded."""
    try:
        if request.method != "GET":
            raise MethodNotAllowed("GET only.")
        await sync_to_async(_authenticate)(request)
        return JsonResponse(await sync_to_async(_model_list)())
    except ModelyardError as exc:
        return _error(exc)


def _parse(raw: bytes) -> tuple[dict, int | None]:
    """Return the body (without `keep_alive`) and the keep-alive it asked for."""
    if len(raw) > MAX_BODY:
        raise body_too_large()
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object.")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or len(model) > 200):
        raise InvalidInput("`model` must be a registry key (a string).")
    keep_alive = body.pop("keep_alive", None)
    if keep_alive is not None and (
        isinstance(keep_alive, bool) or not isinstance(keep_alive, int) or keep_alive < -1
    ):
        raise InvalidInput("`keep_alive` is seconds: -1 (forever), 0 (unload after) or more.")
    return body, keep_alive


def body_too_large() -> InvalidInput:
    return InvalidInput(f"The body is larger than {MAX_BODY // 1024**2} MiB.")


def _route(endpoint: str, body: dict, keep_alive):
    default_type, accepted = ENDPOINTS[endpoint]
    # A loaded model first, in two statements; the full way loads it (JIT) or explains.
    route = runtime_services.runtime_route_ready(
        key=body.get("model"), type=default_type, types=accepted
    )
    if route is not None:
        return route
    model = runtime_services.runtime_model_for(key=body.get("model"), type=default_type)
    if model.type not in accepted:
        raise Incompatible(
            f"{model.key} is {model.get_type_display()}, not served by /v1/{endpoint}.",
            details={"model": model.key, "type": model.type},
        )
    return runtime_services.runtime_route(model=model, keep_alive=keep_alive)


def _admit(request, endpoint: str):
    """Authenticate, parse and route one request: its body, keep-alive and route."""
    _authenticate(request)
    body, keep_alive = _parse(request.body)
    return body, keep_alive, _route(endpoint, body, keep_alive)


def admit_bearer(authorization: str, raw: bytes, endpoint: str):
    """`_admit` for a request with an API token, from its header and body (the fast path)."""
    token_check(authorization)
    body, keep_alive = _parse(raw)
    return body, keep_alive, _route(endpoint, body, keep_alive)


def _proxy_view(endpoint: str):
    @csrf_exempt
    async def view(request):
        if request.method != "POST":
            return _error(MethodNotAllowed("POST only."))
        try:
            # One hop to a thread for all of it: each hop costs the time to first token a
            # wake-up of a thread and of the loop.
            body, keep_alive, route = await sync_to_async(_admit)(request, endpoint)
        except ModelyardError as exc:
            return _error(exc)
        return _response(await forward(endpoint, route, body, keep_alive))

    view.__name__ = endpoint.replace("/", "_")
    return view


# The threads that admit and end the fast path's requests (openai_asgi.py). Their own,
# not one per request (Django's way under ASGI): a thread keeps its SQLite connection,
# whose opening cost a request more than its queries (1.4 ms here); a PostgreSQL
# connection goes back to the pool after each call, as Django hands it back after a
# request. Django's views keep Django's thread: the one its test client's connection is in.
_admit_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="v1-admit")
_fast_path: ContextVar[bool] = ContextVar("modelyard_v1_fast_path", default=False)


def _keep_connections(func, *args):
    try:
        return func(*args)
    finally:
        for connection in connections.all(initialized_only=True):
            if connection.vendor != "sqlite" or connection.errors_occurred:
                connection.close()


async def in_admit_thread(func, *args):
    """Run `func(*args)` in one of the admit threads (and what the request runs after it)."""
    _fast_path.set(True)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_admit_executor, _keep_connections, func, *args)


async def _in_request_thread(func, *args):
    """Run `func(*args)` where the request was admitted: an admit thread, or Django's."""
    if _fast_path.get():
        return await in_admit_thread(func, *args)
    return await sync_to_async(func)(*args)


async def _end(route, keep_alive) -> None:
    await asyncio.shield(_end_soon(route, keep_alive))


def _end_soon(route, keep_alive) -> asyncio.Task:
    """Schedule the end of the request on its instance: it runs even if the client left.

    A client that disconnects cancels the response; the end runs as a task of its own,
    or the instance would stay counted in flight (never evicted nor expired) until its
    lease ran out.
    """

    async def end():
        try:
            await _in_request_thread(_request_end, route, keep_alive)
        except Exception:
            logger.exception("could not end a request on instance %s", route.instance_id)

    task = asyncio.ensure_future(end())
    _ending.add(task)
    task.add_done_callback(_ending.discard)
    return task


def _request_end(route, keep_alive) -> None:
    runtime_services.runtime_request_end(route=route, keep_alive=keep_alive)


async def forward(endpoint: str, route, body: dict, keep_alive) -> Answer:
    """Pass a routed request to its runner; return the runner's answer (a stream as it comes)."""
    body["model"] = route.model_key  # the runner's alias for its one model
    client = _client()
    request = client.build_request(
        "POST",
        f"{route.url}/v1/{endpoint}",
        json=body,
        headers={"Authorization": f"Bearer {route.secret}"},
    )
    try:
        upstream = await client.send(request, stream=True)
    except httpx2.HTTPError as exc:
        await _end(route, keep_alive)
        return error_answer(
            UpstreamError(f"The runner of {route.model_key} did not answer: {exc}."),
            load_seconds=route.load_seconds,
        )
    content_type = upstream.headers.get("content-type", "application/json")
    if body.get("stream") and upstream.status_code == 200:

        async def relay():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx2.HTTPError as exc:
                # The runner went away mid-stream (killed, out of memory). The response has
                # started: raising would leave the client's connection open with nothing
                # more to come, so the stream ends with an error event instead.
                error = UpstreamError(f"The runner of {route.model_key} stopped mid-stream: {exc}.")
                yield _stream_error(error)
            finally:
                ending = _end_soon(route, keep_alive)  # first: a cancelled close cannot skip it
                await upstream.aclose()
                await asyncio.shield(ending)

        return Answer(200, content_type, route.load_seconds, stream=relay())
    try:
        content = await upstream.aread()
    finally:
        await upstream.aclose()
        await _end(route, keep_alive)
    return Answer(upstream.status_code, content_type, route.load_seconds, content=content)


chat_completions = _proxy_view("chat/completions")
completions = _proxy_view("completions")
embeddings = _proxy_view("embeddings")
