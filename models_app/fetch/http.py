"""Read an HTTP response (validator, Content-Range, Retry-After, the socket under the body),
back off between tries and name a transport fault for a message.
"""

from __future__ import annotations

import random
import socket
import ssl
import time
from email.utils import parsedate_to_datetime

import httpx2

from .spec import RetryPolicy


def _plain_socket(response: httpx2.Response) -> socket.socket | None:
    """Return the socket under an HTTP/1.1 response whose body can be read from it directly."""
    if response.http_version != "HTTP/1.1" or "Transfer-Encoding" in response.headers:
        return None
    get_extra_info = getattr(response.extensions.get("network_stream"), "get_extra_info", None)
    if get_extra_info is None:
        return None
    sock = get_extra_info("socket")
    if not isinstance(sock, socket.socket):
        return None
    if get_extra_info("ssl_object") is not None and not isinstance(sock, ssl.SSLSocket):
        return None  # TLS inside a proxy tunnel: the socket carries the outer layer
    return sock


def _validator(headers: httpx2.Headers) -> str | None:
    """Return a strong validator for If-Range: the ETag, else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _content_range(value: str) -> tuple[int | None, int | None]:
    """Parse `bytes START-END/TOTAL` into (START, TOTAL); None where unknown."""
    unit, _, rest = value.strip().partition(" ")
    span, _, total = rest.partition("/")
    start = span.partition("-")[0]
    if unit.lower() != "bytes":
        return None, None
    return _int_or_none(start), _int_or_none(total)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(value: str | None, cap: float) -> float | None:
    """Return the delay a Retry-After header asks for (seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)


def _backoff(policy: RetryPolicy, tries: int) -> float:
    delay = policy.base_delay * 2 ** (tries - 1)
    delay *= 1 + random.uniform(-policy.jitter, policy.jitter)
    return min(policy.max_delay, max(0.0, delay))


def _describe(exc: BaseException) -> str:
    """Name an exception for a message (its text never holds request headers)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
