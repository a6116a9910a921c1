"""The retry loop around one blob, and one try: request, receive, verify."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2

from models_app.errors import (
    AuthError,
    Cancelled,
    ChecksumError,
    DiskSpace,
    ModelyardError,
    NetworkError,
    NotFound,
    TimedOut,
    UpstreamError,
)

from .http import (
    _backoff,
    _content_range,
    _describe,
    _int_or_none,
    _plain_socket,
    _retry_after,
    _validator,
)
from .sink import _BUFFER_SIZE, _Digests, _fsync_directory, _Sink
from .spec import BlobSpec, RetryPolicy

# The package's logger, as before the split: log lines keep the name models_app.fetch.
logger = logging.getLogger(__package__)

_DIRECT_READ_MIN = 4 << 20  # smaller bodies go through httpx and keep the pooled connection
# The longest a cancel waits while sleeping or while the socket is quiet.
_TICK = 0.1
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows would translate newlines otherwise


class _Retry(Exception):
    """A transient fault: try again after a backoff, resuming from the partial."""

    def __init__(self, error: type[ModelyardError], cause: str, retry_after: float | None = None):
        super().__init__(cause)
        self.error, self.cause, self.retry_after = error, cause, retry_after


class _Restart(Exception):
    """The partial cannot be resumed: start again from byte 0 at once."""


class _Mismatch(Exception):
    """What arrived is not the blob: download it once more from zero, then give up."""


@dataclass
class _BlobFetch:
    session: httpx2.Client
    spec: BlobSpec
    partial: Path
    final: Path
    headers: dict[str, str]
    policy: RetryPolicy
    on_progress: Callable[[int], None]
    cancel: threading.Event
    sleep: Callable[[float], None]
    on_retry: Callable[[], None] = lambda: None
    wire: int = 0
    # Hashes of the partial's content, kept across tries so a resume does not re-read it.
    digests: _Digests | None = None

    @property
    def sidecar(self) -> Path:
        return self.partial.with_name(self.partial.name + ".json")

    def run(self) -> int:
        tries = 0  # every try, for messages
        # Consecutive failed tries that brought the partial past its best length so far:
        # a try that advanced starts the count again, so a fault that keeps recurring but
        # lets bytes through each time never exhausts the budget, and the run still ends
        # (the best length only grows, up to the blob's size).
        failures = 0
        best = self._kept_on_disk()
        redone = False
        while True:
            tries += 1
            try:
                self._transfer()
                self._verify()
                os.replace(self.partial, self.final)
            except _Retry as fault:
                kept = self.digests.length if self.digests else 0
                advanced = kept > best
                best = max(best, kept)
                failures = 1 if advanced else failures + 1
                if failures >= self.policy.attempts:
                    raise fault.error(
                        f"{self.spec.path}: download failed after {tries} attempt(s)"
                        f" ({failures} in a row since the last progress);"
                        f" last error: {fault.cause}"
                    ) from fault.__cause__
                delay = fault.retry_after
                if delay is None:
                    delay = _backoff(self.policy, failures)
                logger.warning(
                    "%s: %s; retrying in %.1f s (attempt %d; failure %d of %d since progress)",
                    self.spec.path,
                    fault.cause,
                    delay,
                    tries + 1,
                    failures,
                    self.policy.attempts,
                )
                self._sleep(delay)
                self.on_retry()
            except _Restart as reason:
                logger.info("%s: restarting from zero: %s", self.spec.path, reason)
                self._discard()
                self.on_retry()
            except _Mismatch as mismatch:
                self._discard()
                if redone:
                    raise ChecksumError(
                        f"{self.spec.path}: {mismatch} (downloaded twice from zero)"
                    ) from None
                logger.warning("%s: %s; downloading again from zero", self.spec.path, mismatch)
                redone = True
                self.on_retry()
            except OSError as exc:
                if exc.errno not in _DISK_FULL:
                    raise
                raise DiskSpace(
                    f"{self.spec.path}: no space left on the device holding {self.partial.parent}"
                    f" ({self.digests.length if self.digests else 0} of {self.spec.size} bytes"
                    " kept for a later resume)"
                ) from exc
            else:
                break
        self.sidecar.unlink(missing_ok=True)
        _fsync_directory(self.final.parent)
        return self.wire

    # ------------------------------------------------------------------ one try

    def _transfer(self) -> None:
        """Bring the partial to spec.size bytes, resuming from what is on disk."""
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        offset = self._resume_point()
        if offset == self.spec.size:
            return
        headers = {**self.headers, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            # Without a validator (a partial left by another tool) the hashes still catch a change.
            if validator := self._read_validator():
                headers["If-Range"] = validator
        p = self.policy
        timeout = httpx2.Timeout(
            connect=p.connect_timeout,
            read=p.read_timeout,
            write=p.connect_timeout,
            pool=p.connect_timeout,
        )
        try:
            # httpx2 drops Authorization when a redirect leaves the origin (the Hub's CDN).
            with self.session.stream(
                "GET", self.spec.url, headers=headers, timeout=timeout, follow_redirects=True
            ) as response:
                self._receive(response, offset)
        except httpx2.TimeoutException as exc:
            raise _Retry(TimedOut, _describe(exc)) from exc
        except (httpx2.NetworkError, httpx2.RemoteProtocolError, httpx2.ProxyError) as exc:
            raise _Retry(NetworkError, _describe(exc)) from exc
        except (httpx2.DecodingError, httpx2.TooManyRedirects, httpx2.TransportError) as exc:
            raise UpstreamError(f"{self.spec.path}: {_describe(exc)}") from exc

    def _resume_point(self) -> int:
        """Return how many bytes of the partial are kept, their hashes caught up."""
        try:
            size = self.partial.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > self.spec.size:
            self._discard()
            size = 0
        if self.digests is None or self.digests.length != size:
            self.digests = _Digests(self.spec)
            self._hash_prefix(size)
        self.on_progress(size)
        return size

    def _hash_prefix(self, size: int) -> None:
        assert self.digests is not None
        if not size:
            return
        buf = bytearray(_BUFFER_SIZE)
        with open(self.partial, "rb", buffering=0) as f, memoryview(buf) as view:
            while self.digests.length < size:
                self._check_cancel(size)
                n = f.readinto(view[: min(len(buf), size - self.digests.length)])
                if not n:
                    raise _Restart("the partial file shrank while being read")
                self.digests.update(view[:n])

    def _receive(self, response: httpx2.Response, offset: int) -> None:
        status = response.status_code
        if status == 416 and offset:
            raise _Restart(f"the server cannot serve bytes from {offset} (HTTP 416)")
        if status not in (200, 206):
            self._refuse(response)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        encoded = encoding not in ("", "identity")
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range", ""))
            if start != offset or encoded:
                if offset:
                    raise _Restart(f"the server answered Range {offset} with {start}")
                raise UpstreamError(f"{self.spec.path}: unexpected partial content from 0")
            if total is not None and total != self.spec.size:
                raise _Mismatch(f"size mismatch: expected {self.spec.size}, server has {total}")
        elif offset:
            # The server ignored the Range or the validator changed: this is the whole blob.
            os.truncate(self.partial, 0)
            self.digests = _Digests(self.spec)
            self.on_progress(0)
            offset = 0
        self._write_validator(_validator(response.headers))
        length = None if encoded else _int_or_none(response.headers.get("Content-Length"))
        if length is not None and offset + length != self.spec.size:
            raise _Mismatch(
                f"size mismatch: expected {self.spec.size}, server sends {offset + length}"
            )
        assert self.digests is not None
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | _O_BINARY, 0o644)
        try:
            os.lseek(fd, offset, os.SEEK_SET)
            sink = _Sink(fd, self.digests)
            try:
                self._pump(response, sink, encoded=encoded, sized=length is not None)
            finally:
                sink.close()
            if sink.error is not None:
                raise sink.error
        finally:
            os.close(fd)
        if sink.written < self.spec.size:
            raise _Retry(
                NetworkError,
                f"the connection closed after {sink.written} of {self.spec.size} bytes",
            )

    def _pump(self, response: httpx2.Response, sink: _Sink, *, encoded: bool, sized: bool) -> None:
        # No chunk_size: httpx would wait to fill it, which starves progress and cancel.
        chunks = response.iter_bytes()  # decodes a Content-Encoding the server forced on us
        direct = sized and not encoded
        try:
            for chunk in chunks:
                self._check_cancel(sink.written)
                if sink.written + len(chunk) > self.spec.size:
                    raise _Mismatch(f"size mismatch: more than {self.spec.size} bytes arrived")
                sink.write(chunk)
                self.on_progress(sink.written)
                # h11 hands over everything it buffered in its first body event, so from
                # here on the socket holds the rest of the body, and nothing else.
                if direct and self.spec.size - sink.written >= _DIRECT_READ_MIN:
                    sock = _plain_socket(response)
                    if sock is not None:
                        self._pump_socket(sock, sink)
                        break
                direct = False
        finally:
            chunks.close()  # after a direct read this closes the connection, never pools it
            self.wire += response.num_bytes_downloaded

    def _pump_socket(self, sock: socket.socket, sink: _Sink) -> None:
        sock.settimeout(_TICK)
        quiet = 0.0
        while (remaining := self.spec.size - sink.written) > 0:
            room = sink.space()
            try:
                n = sock.recv_into(room, min(len(room), remaining))
            except TimeoutError:
                self._check_cancel(sink.written)
                quiet += _TICK
                if quiet >= self.policy.read_timeout:
                    raise _Retry(TimedOut, f"no data for {self.policy.read_timeout:g} s") from None
                continue
            except OSError as exc:
                raise _Retry(NetworkError, _describe(exc)) from exc
            finally:
                room.release()
            if not n:
                return  # cut short: the caller retries from sink.written
            quiet = 0.0
            self.wire += n
            sink.filled(n)
            self.on_progress(sink.written)
            self._check_cancel(sink.written)

    def _refuse(self, response: httpx2.Response) -> None:
        status, path = response.status_code, self.spec.path
        code = response.headers.get("X-Error-Code")
        said = f" ({code})" if code else ""
        if status in (401, 403):
            raise AuthError(
                f"{path}: the Hub refused access (HTTP {status}{said}): the repo is gated or the"
                " token is missing or invalid. Accept the model's terms on its Hub page, then"
                " set a token with read access."
            )
        if status == 404:
            raise NotFound(f"{path}: not found on the Hub (HTTP 404{said}): {self.spec.url}")
        if status == 429 or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"), self.policy.max_delay)
            raise _Retry(UpstreamError, f"HTTP {status}{said}", retry_after)
        raise UpstreamError(f"{path}: unexpected answer from the Hub: HTTP {status}{said}")

    def _verify(self) -> None:
        """Fsync the complete partial and compare its size and hashes with the spec."""
        assert self.digests is not None
        # O_CREAT: an empty blob never needed a request, so nothing created its partial.
        fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | _O_BINARY, 0o644)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size != self.spec.size or self.digests.length != size:
            raise _Mismatch(f"size mismatch: expected {self.spec.size}, got {size}")
        checks = [
            ("sha256", self.spec.sha256, self.digests.sha256),
            ("pinned sha256", self.spec.pinned_sha256, self.digests.sha256),
            ("git blob sha1", self.spec.git_oid, self.digests.git),
        ]
        for name, expected, digest in checks:
            if expected and digest is not None and digest.hexdigest() != expected.lower():
                raise _Mismatch(f"{name} mismatch: expected {expected}, got {digest.hexdigest()}")

    # ------------------------------------------------------------------ helpers

    def _kept_on_disk(self) -> int:
        """Return the bytes of the partial a first try resumes from (0 if it is unusable)."""
        try:
            size = self.partial.stat().st_size
        except FileNotFoundError:
            return 0
        return size if size <= self.spec.size else 0

    def _discard(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.digests = None
        self.on_progress(0)

    def _check_cancel(self, kept: int) -> None:
        if self.cancel.is_set():
            raise Cancelled(
                f"{self.spec.path}: download cancelled;"
                f" {kept} of {self.spec.size} bytes kept for a later resume"
            )

    def _sleep(self, delay: float) -> None:
        """Sleep in short slices, so that a cancel is seen at once."""
        kept = self.digests.length if self.digests else 0
        remaining = delay
        while remaining > 0:
            self._check_cancel(kept)
            step = min(_TICK, remaining)
            self.sleep(step)
            remaining -= step
        self._check_cancel(kept)

    def _read_validator(self) -> str | None:
        try:
            record = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return None
        validator = record.get("validator") if isinstance(record, dict) else None
        return validator if isinstance(validator, str) and validator else None

    def _write_validator(self, validator: str | None) -> None:
        record = {"url": self.spec.url, "size": self.spec.size, "validator": validator}
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.sidecar)
