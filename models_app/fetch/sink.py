"""Put the bytes on disk: the partial's writer and hasher, and the fsync of a rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from pathlib import Path

from .spec import BlobSpec

# Big bodies are read straight from the socket into these buffers (see
# transfer._BlobFetch._pump_socket): one read, one write and one hash update per buffer
# instead of per 64 KiB parsed by h11.
_BUFFER_SIZE = 1 << 20
_BUFFERS = 4  # in flight between the reader and the hasher: the memory bound
_QUEUE_DEPTH = 16
# Start write-back this often, so the final fsync has little left to do.
_FLUSH_EVERY = 16 << 20
_fdatasync = getattr(os, "fdatasync", os.fsync)


class _Digests:
    """The hashes of a prefix of the blob."""

    def __init__(self, spec: BlobSpec):
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % spec.size) if spec.git_oid else None
        self.length = 0

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)
        self.length += len(data)


class _Sink:
    """Append to the partial file; hash in a second thread and start write-back in a third.

    hashlib and fdatasync release the GIL, so reading the socket, hashing and flushing overlap.
    Call `close()` before closing `fd`; afterwards the digests cover every byte written.
    """

    def __init__(self, fd: int, digests: _Digests):
        self.fd = fd
        self.written = digests.length
        self.error: BaseException | None = None
        self._todo: queue.Queue[tuple[memoryview | bytes, bytearray | None] | None] = queue.Queue(
            maxsize=_QUEUE_DEPTH
        )
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._allocated = 0
        self._hasher = threading.Thread(target=self._hash, args=(digests,), daemon=True)
        self._hasher.start()
        self._flusher: threading.Thread | None = None
        self._flush_wanted = threading.Event()
        self._flush_mark = self.written
        self._closing = False

    def buffer(self) -> bytearray:
        """Return a free buffer, waiting for the hasher when all are in flight."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._allocated < _BUFFERS:
                self._allocated += 1
                return bytearray(_BUFFER_SIZE)
        return self._free.get()

    def give_back(self, buf: bytearray) -> None:
        self._free.put(buf)

    def commit(self, buf: bytearray, n: int) -> None:
        """Write the first n bytes of a buffer from `buffer()`, which returns to the pool."""
        self._write(memoryview(buf)[:n], buf)

    def write(self, data: bytes) -> None:
        self._write(data, None)

    def _write(self, data: memoryview | bytes, buf: bytearray | None) -> None:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        self.written += len(view)
        self._todo.put((data, buf))
        if self.written - self._flush_mark >= _FLUSH_EVERY:
            self._flush_mark = self.written
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush, daemon=True)
                self._flusher.start()
            self._flush_wanted.set()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Wait for the hasher and the flusher; never raise (see `error`)."""
        self._todo.put(None)
        self._hasher.join()
        if self._flusher is not None:
            self._closing = True
            self._flush_wanted.set()
            self._flusher.join()

    def _hash(self, digests: _Digests) -> None:
        while (item := self._todo.get()) is not None:
            data, buf = item
            if self.error is None:
                try:
                    digests.update(data)
                except BaseException as exc:  # keep draining, or the reader would wait forever
                    self.error = exc
            if buf is not None:
                self._free.put(buf)

    def _flush(self) -> None:
        while True:
            self._flush_wanted.wait()
            self._flush_wanted.clear()
            if self._closing:
                return
            try:
                _fdatasync(self.fd)
            except OSError as exc:  # ENOSPC may only show here, on some filesystems
                self.error = self.error or exc
                return


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform opens directories)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
