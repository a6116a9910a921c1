"""The blob sink: buffers hashed, then written with O_DIRECT where the filesystem takes it.

Real files on the test's own filesystem. Two tests stand in for what this machine has not
(a platform without O_DIRECT, a filesystem whose blocks are larger than the sink aligns to),
and say so.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random

import pytest

from models_app.fetch import BlobSpec
from models_app.fetch import sink as fetch_sink
from models_app.fetch.sink import _ALIGN, _BUFFER_SIZE, _BUFFERS, _Digests, _Sink
from tests.processes import wait_until

MiB = 1 << 20


def takes_direct_io(directory) -> bool:
    probe = directory / "probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def spec(size: int) -> BlobSpec:
    return BlobSpec(url="http://hub.test/x", path="x.bin", size=size, sha256=None, git_oid=None)


def write_blob(
    path, prefix: bytes, data: bytes, *, chunks: random.Random
) -> tuple[_Sink, _Digests]:
    """Write `prefix` as a kept partial, then `data` through a sink, in chunks of random sizes:
    first through `write()` (httpx's chunks), then through `space()`/`filled()` (the socket).
    """
    path.write_bytes(prefix)
    digests = _Digests(spec(len(prefix) + len(data)))
    digests.update(prefix)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, len(prefix), os.SEEK_SET)
        sink = _Sink(fd, digests)
        done = 0
        while done < len(data) // 10:
            n = chunks.randint(1, 70_000)
            sink.write(data[done : done + n])
            done += n
        while done < len(data):
            with sink.space() as room:
                n = min(len(room), chunks.randint(1, 300_000), len(data) - done)
                room[:n] = data[done : done + n]
            sink.filled(n)
            done += n
        sink.close()
    finally:
        os.close(fd)
    return sink, digests


@pytest.fixture
def writes(monkeypatch) -> list[tuple[int, int, bool]]:
    """Record each os.write of the test's sink: (file offset, length, O_DIRECT on).

    Buffers are sent on only when full (no _LINGER), so that the writes are as planned.
    """
    monkeypatch.setattr(fetch_sink, "_LINGER", 3600.0)
    seen: list[tuple[int, int, bool]] = []
    original = os.write

    def spy(fd, data):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == "blob":
            direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
            seen.append((os.lseek(fd, 0, os.SEEK_CUR), len(memoryview(data)), direct))
        return original(fd, data)

    monkeypatch.setattr(os, "write", spy)
    return seen


def test_full_buffers_go_direct_and_the_ends_through_the_page_cache(tmp_path, writes):
    if not takes_direct_io(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} does not take O_DIRECT")
    rng = random.Random(9)
    prefix, data = rng.randbytes(5000), rng.randbytes(5 * MiB + 1234)  # unaligned at both ends
    path = tmp_path / "blob"
    sink, digests = write_blob(path, prefix, data, chunks=rng)

    assert sink.error is None and sink.direct
    assert path.read_bytes() == prefix + data
    assert digests.length == len(prefix) + len(data)
    assert digests.sha256.hexdigest() == hashlib.sha256(prefix + data).hexdigest()
    direct = [(offset, length) for offset, length, on in writes if on]
    buffered = [(offset, length) for offset, length, on in writes if not on]
    # The first buffer ends at the first aligned offset; every full buffer after it goes
    # straight to the disk; the tail is the one write after them.
    first_aligned = len(prefix) + _BUFFER_SIZE - len(prefix) % _ALIGN
    assert buffered[0] == (len(prefix), first_aligned - len(prefix))
    assert direct == [(first_aligned + i * _BUFFER_SIZE, _BUFFER_SIZE) for i in range(4)]
    tail = first_aligned + 4 * _BUFFER_SIZE
    assert buffered[1:] == [(tail, len(prefix) + len(data) - tail)]
    assert sink._allocated <= _BUFFERS


def test_a_sink_on_an_aligned_partial_starts_direct(tmp_path, writes):
    if not takes_direct_io(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} does not take O_DIRECT")
    rng = random.Random(3)
    data = rng.randbytes(2 * MiB)
    _, digests = write_blob(tmp_path / "blob", b"", data, chunks=rng)
    assert digests.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert [on for _, _, on in writes] == [True, True]


def test_without_direct_io_every_write_goes_through_the_page_cache(tmp_path, writes, monkeypatch):
    """Stands in for macOS and Windows, which have no O_DIRECT: write-back is started as the
    bytes come (fdatasync every _FLUSH_EVERY), so the final fsync has little left."""
    monkeypatch.setattr(fetch_sink, "_O_DIRECT", 0)
    flushes: list[int] = []
    monkeypatch.setattr(fetch_sink, "_fdatasync", lambda fd: flushes.append(fd) or os.fdatasync(fd))
    rng = random.Random(5)
    data = rng.randbytes(2 * fetch_sink._FLUSH_EVERY + 77)
    path = tmp_path / "blob"
    sink, digests = write_blob(path, b"x" * 10, data, chunks=rng)
    assert not sink.direct
    assert path.read_bytes() == b"x" * 10 + data
    assert digests.sha256.hexdigest() == hashlib.sha256(b"x" * 10 + data).hexdigest()
    assert writes and not any(on for _, _, on in writes)
    assert flushes


def test_a_direct_write_the_filesystem_refuses_is_made_through_the_page_cache(
    tmp_path, writes, monkeypatch
):
    """Stands in for a filesystem that takes the O_DIRECT flag but not a write aligned to
    _ALIGN (blocks of 8 KiB or more): none is here, so os.write refuses as it would."""
    if not takes_direct_io(tmp_path):
        pytest.skip(f"the filesystem of {tmp_path} does not take O_DIRECT")
    write = os.write  # the spy
    refused: list[int] = []

    def refuse_direct(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(memoryview(data)))
            raise OSError(errno.EINVAL, "Invalid argument")
        return write(fd, data)

    monkeypatch.setattr(os, "write", refuse_direct)
    rng = random.Random(7)
    data = rng.randbytes(3 * MiB + 5)
    path = tmp_path / "blob"
    sink, digests = write_blob(path, b"", data, chunks=rng)
    assert sink.error is None and not sink.direct
    assert path.read_bytes() == data
    assert digests.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert refused == [_BUFFER_SIZE]  # one refusal, then no more tries
    # The refused buffer was written again through the page cache, at the same offset.
    assert [offset for offset, _, _ in writes] == [i * _BUFFER_SIZE for i in range(4)]


def test_a_slowly_filled_buffer_reaches_the_disk_before_it_is_full(tmp_path, monkeypatch):
    """A slow link fills a buffer for seconds: what came is written every _LINGER (here at
    every read), so a worker killed then has lost at most that long's bytes."""
    monkeypatch.setattr(fetch_sink, "_LINGER", 0.0)
    rng = random.Random(11)
    data = rng.randbytes(3 * _ALIGN + 100)
    path = tmp_path / "blob"
    path.write_bytes(b"")
    digests = _Digests(spec(len(data)))
    fd = os.open(path, os.O_WRONLY)
    try:
        sink = _Sink(fd, digests)
        sink.write(data[: 2 * _ALIGN + 10])
        # Still in the first buffer, which is far from full: its aligned part is on disk.
        wait_until(lambda: path.stat().st_size == 2 * _ALIGN, timeout=10, what="the write")
        sink.write(data[2 * _ALIGN + 10 :])
        sink.close()
    finally:
        os.close(fd)
    assert sink.error is None
    assert path.read_bytes() == data
    assert digests.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
