"""Put the bytes on disk: the partial's writer and hasher, and the fsync of a rename."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import queue
import threading
import time
from pathlib import Path

from .spec import BlobSpec

try:
    import fcntl
except ImportError:  # Windows: no O_DIRECT either
    fcntl = None

# The reader fills these buffers (straight from the socket for big bodies, see
# transfer._BlobFetch._pump_socket); a full one is hashed by one thread, then written by
# another, while the reader fills the next: one hash update and one write per buffer.
# Hashing first reads the bytes while the reader's copy still has them in the CPU's cache
# (docs/ARCHITECTURE-NOTES.md, "Writing a blob").
_BUFFER_SIZE = 1 << 20
_BUFFERS = 8  # in flight between the reader, the hasher and the writer: the memory bound
# A buffer that fills slowly (a slow link) sends what it has on this often, so that what
# was received is on disk soon, as it was when every read was written at once: a worker
# killed mid-download loses at most this long's bytes, and the resume asks for them again.
_LINGER = 0.1
# Direct I/O (O_DIRECT) moves the bytes from the buffer to the disk without the page cache.
# Writes through the page cache first take pages for it, which on a VM can mean pages its
# host has reclaimed, several times slower than pages just freed (bench/page_cache.py;
# docs/ARCHITECTURE-NOTES.md, "Writing a blob"). A direct write needs its
# offset, length and buffer aligned to the device's blocks; this covers 512 and 4096.
_ALIGN = 4096
_O_DIRECT = getattr(os, "O_DIRECT", 0) if fcntl else 0  # Linux; elsewhere every write is buffered
# Buffered writes start write-back this often, so the final fsync has little left to do.
_FLUSH_EVERY = 16 << 20
_fdatasync = getattr(os, "fdatasync", os.fsync)
_Piece = tuple[mmap.mmap, int, int, bool]


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
    """Write the blob from `digests.length` on: fill a buffer, hash it in one thread and write
    it in another, in order.

    hashlib, writes and fdatasync release the GIL, so reading the socket, hashing and writing
    overlap. Full buffers (from a slow link, the aligned part of a buffer every _LINGER) are
    written with O_DIRECT where the filesystem takes it; the first piece (to reach an aligned
    offset) and the last are written through the page cache.
    `fd` is positioned at `digests.length`, and only the writer moves it.
    Call `close()` before closing `fd`. Without an `error`, the digests then cover every byte
    written; after one they may cover more than reached the disk. A write error ends the
    download, and the next one hashes the kept partial again.
    """

    def __init__(self, fd: int, digests: _Digests):
        self.fd = fd
        self.written = digests.length  # bytes handed to the sink (on disk after close)
        self.error: BaseException | None = None
        self._fd_direct = False
        self.direct = _O_DIRECT != 0 and self._set_direct(True)
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._allocated = 0
        # The buffer being filled: its first byte's offset in the file, how much of it the
        # reader filled and sent on, and its capacity. The first buffer ends at an aligned
        # offset, so that the full buffers after it start at one.
        self._current: mmap.mmap | None = None
        self._base = self.written
        self._filled = self._sent = 0
        self._capacity = _BUFFER_SIZE - self.written % _ALIGN
        self._sent_at = time.monotonic()
        # (buffer, start, end, last piece of the buffer), in file order.
        self._to_hash: queue.SimpleQueue[_Piece | None] = queue.SimpleQueue()
        self._to_write: queue.SimpleQueue[_Piece | None] = queue.SimpleQueue()
        self._hasher = threading.Thread(target=self._hash_all, args=(digests,), daemon=True)
        self._writer = threading.Thread(target=self._write_all, args=(self.written,), daemon=True)
        self._hasher.start()
        self._writer.start()
        self._flusher: threading.Thread | None = None
        self._flush_wanted = threading.Event()
        self._closing = False

    # ------------------------------------------------------------------ the reader's side

    def space(self) -> memoryview:
        """Return the room left in the current buffer, waiting for one when all are in flight."""
        if self.error is not None:
            raise self.error
        if self._current is None:
            self._current = self._take()
        return memoryview(self._current)[self._filled : self._capacity]

    def filled(self, n: int) -> None:
        """Count n bytes put at the start of `space()`; a full buffer goes to be hashed, and
        so does the aligned part of a slow one every _LINGER."""
        self._filled += n
        self.written += n
        if self._filled == self._capacity:
            self._send(last=True)
        elif time.monotonic() - self._sent_at >= _LINGER:
            aligned = self.written - self.written % _ALIGN - self._base
            if aligned > self._sent:
                self._send(last=False, end=aligned)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            with self.space() as room:
                n = min(len(room), len(view))
                room[:n] = view[:n]
            self.filled(n)
            view = view[n:]

    def close(self) -> None:
        """Write what is left; wait for the hasher, writer and flusher. Never raise: see `error`."""
        if self._current is not None:
            self._send(last=True)
        self._to_hash.put(None)
        self._hasher.join()
        self._writer.join()
        if self._flusher is not None:
            self._closing = True
            self._flush_wanted.set()
            self._flusher.join()

    def _take(self) -> mmap.mmap:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            if self._allocated < _BUFFERS:
                self._allocated += 1
                return mmap.mmap(-1, _BUFFER_SIZE)  # page-aligned, as direct I/O needs
        return self._free.get()

    def _send(self, *, last: bool, end: int | None = None) -> None:
        """Send the current buffer's filled bytes not yet sent (up to `end`) to be hashed."""
        assert self._current is not None
        end = self._filled if end is None else end
        self._to_hash.put((self._current, self._sent, end, last))
        self._sent_at = time.monotonic()
        if last:
            self._base += self._filled
            self._current, self._filled, self._sent = None, 0, 0
            self._capacity = _BUFFER_SIZE
        else:
            self._sent = end

    # ------------------------------------------------------------------ the threads

    def _write_all(self, offset: int) -> None:
        flush_mark = offset
        while (piece := self._to_write.get()) is not None:
            buf, start, end, last = piece
            if self.error is None and end > start:
                try:
                    self._put(memoryview(buf)[start:end], offset)
                except BaseException as exc:  # keep draining, or the reader would wait forever
                    self.error = exc
            offset += end - start
            if not self.direct and offset - flush_mark >= _FLUSH_EVERY:
                flush_mark = offset
                self._flush_soon()
            if last:
                self._free.put(buf)

    def _put(self, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            part = view[done:]
            direct = self.direct and (offset + done) % _ALIGN == 0 and len(part) % _ALIGN == 0
            if direct != self._fd_direct:
                self._set_direct(direct)
            try:
                done += os.write(self.fd, part)
            except OSError as exc:
                if not (direct and exc.errno == errno.EINVAL):
                    raise
                # The filesystem took the flag but not this write (blocks larger than
                # _ALIGN): the page cache from here on.
                self.direct = False

    def _set_direct(self, on: bool) -> bool:
        """Turn O_DIRECT on or off for `fd`; return whether the filesystem took it."""
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)
        except OSError:
            return False
        self._fd_direct = on
        return True

    def _hash_all(self, digests: _Digests) -> None:
        while (piece := self._to_hash.get()) is not None:
            buf, start, end, _ = piece
            if self.error is None:  # after an error, the next try hashes the file again
                try:
                    digests.update(memoryview(buf)[start:end])
                except BaseException as exc:
                    self.error = exc
            self._to_write.put(piece)
        self._to_write.put(None)

    def _flush_soon(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush, daemon=True)
            self._flusher.start()
        self._flush_wanted.set()

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
