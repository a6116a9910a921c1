"""The /v1 proxy's fast path: a request with an API token, served without Django's stack.

A POST to /v1/chat/completions, /v1/completions or /v1/embeddings with
`Authorization: Bearer` needs none of what Django's handler and middleware do for a page
(sessions, messages, CSRF, the per-request thread that opens a database connection of its
own), and each of those costs the time to first token: measured here under daphne, 4 ms
from the request to the view and 9 ms to admit it, against the runner's own 40 ms. This
ASGI application takes those requests before Django does, with the same functions as the
views (openai_api.py: the token check, the parse, the route, the runner's answer), one hop
to an admit thread, and the headers Django's security middleware would add. Everything
else goes to Django unchanged: a browser session (Try it), another method or path, a Host
that ALLOWED_HOSTS refuses, a plain-HTTP request that must be redirected to HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import secrets

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from .errors import InternalError, ModelyardError
from .openai_api import (
    MAX_BODY,
    Answer,
    admit_bearer,
    body_too_large,
    error_answer,
    forward,
    in_admit_thread,
)

logger = logging.getLogger(__name__)

FAST_PATHS = {
    "/v1/chat/completions": "chat/completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def openai_fast_path(django_app):
    """Wrap Django's ASGI application: bearer-token /v1 POSTs are served here, the rest there."""

    async def app(scope, receive, send):
        taken = _fast_endpoint(scope)
        if taken is None:
            return await django_app(scope, receive, send)
        await _serve(*taken, receive, send)

    return app


def _fast_endpoint(scope) -> tuple[str, str, ASGIRequest] | None:
    """Return (endpoint, Authorization header, request) if the fast path takes the request.

    The request (headers only) is Django's, for Django's own reading of the Host
    (ALLOWED_HOSTS, USE_X_FORWARDED_HOST), of the scheme (SECURE_PROXY_SSL_HEADER) and of
    an HTTPS redirect (SecurityMiddleware's): one it would refuse or redirect goes to it.
    """
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    endpoint = FAST_PATHS.get(scope["path"])
    if endpoint is None:
        return None
    authorization = ""
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
    if not authorization.lower().startswith("bearer "):
        return None
    request = ASGIRequest(scope, io.BytesIO())
    try:
        request.get_host()
    except DisallowedHost:
        return None
    if SecurityMiddleware(_unused).process_request(request) is not None:
        return None
    return endpoint, authorization, request


def _unused(request):  # the middlewares' get_response: only their hooks are called here
    raise NotImplementedError


def security_headers(request: ASGIRequest) -> list[tuple[bytes, bytes]]:
    """Return the headers SecurityMiddleware and XFrameOptionsMiddleware add, made by them."""
    response = HttpResponse()
    del response["Content-Type"]
    SecurityMiddleware(_unused).process_response(request, response)
    XFrameOptionsMiddleware(_unused).process_response(request, response)
    return [(name.lower().encode(), value.encode()) for name, value in response.items()]


async def _read_body(receive) -> bytes | None:
    """Return the request's body, or None if the client left before sending all of it."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise body_too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _serve(endpoint: str, authorization: str, request: ASGIRequest, receive, send) -> None:
    try:
        raw = await _read_body(receive)
        if raw is None:
            return
        body, keep_alive, route = await in_admit_thread(admit_bearer, authorization, raw, endpoint)
    except ModelyardError as exc:
        answer = error_answer(exc)
    except Exception:
        # What Django's handler would make an HTML 500 is an OpenAI-shaped one here, its
        # traceback in the log under the reference it names (as an operation's crash).
        reference = secrets.token_hex(6)
        logger.exception("/v1/%s crashed [ref %s]", endpoint, reference)
        answer = error_answer(
            InternalError(f"Unexpected error (reference {reference}); the server log has it.")
        )
    else:
        answer = await forward(endpoint, route, body, keep_alive)
    await _send(answer, request, receive, send)


async def _send(answer: Answer, request: ASGIRequest, receive, send) -> None:
    headers = [
        (b"content-type", answer.content_type.encode("latin-1")),
        *((name.lower().encode(), value.encode()) for name, value in answer.headers.items()),
        *security_headers(request),
    ]
    if answer.stream is None:
        headers.append((b"content-length", str(len(answer.content)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.content})
        return
    stream = answer.stream

    async def pump():
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        async for chunk in stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def left():
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping, listening = asyncio.ensure_future(pump()), asyncio.ensure_future(left())
    try:
        # A client that leaves stops the stream (its end still runs: openai_api's relay).
        await asyncio.wait({pumping, listening}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, listening):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await stream.aclose()
