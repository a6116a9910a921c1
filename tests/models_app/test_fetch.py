"""Tests for models_app.fetch: one blob over real HTTP from tests/hub_server.py, to real files."""

from __future__ import annotations

import ast
import dataclasses
import errno
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
import tracemalloc
from pathlib import Path

import httpx2
import pytest
from huggingface_hub.utils import build_hf_headers, get_session

from models_app.errors import (
    AuthError,
    Cancelled,
    ChecksumError,
    DiskSpace,
    NetworkError,
    NotFound,
    TimedOut,
    UpstreamError,
)
from models_app.fetch import BlobSpec, RetryPolicy, fetch_blob
from models_app.fetch import http as fetch_http
from models_app.fetch import transfer as fetch_transfer
from tests.hub_server import HubServer, make_repo, sha256_file

REPO = "acme/blobs"
MiB = 1 << 20
FILES: dict[str, bytes | int] = {
    "config.json": b'{"model_type": "llama", "hidden_size": 64}\n',
    "empty.txt": b"",
    "model.bin": 8 * MiB,  # read straight from the socket
    "mini.bin": 1 * MiB,  # small enough to stay on httpx's iterator
    "big.bin": 256 * MiB,
}
FAST = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, connect_timeout=2, read_timeout=5)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    make_repo(root, REPO, FILES)
    return root


@pytest.fixture(scope="module")
def hub(hub_root):
    server = HubServer(hub_root).start()
    server.warm()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_hub(hub):
    hub.clear_faults()
    hub.reset_counters()
    hub.required_token = None
    yield
    hub.clear_faults()
    hub.required_token = None


def spec_for(server: HubServer, name: str, **overrides) -> BlobSpec:
    meta = server.file_meta(REPO, name)
    commit = server.repo_commit(REPO)
    fields = {
        "url": f"{server.url}/{REPO}/resolve/{commit}/{name}",
        "path": name,
        "size": meta.size,
        "sha256": meta.sha256,
        "git_oid": None if meta.is_lfs else meta.git_oid,
    }
    return BlobSpec(**{**fields, **overrides})


class Blob:
    """The partial and final paths of one blob under tmp_path, and a way to fetch it."""

    def __init__(self, directory: Path, spec: BlobSpec):
        self.spec = spec
        self.final = directory / "blobs" / f"{spec.sha256 or spec.git_oid or 'blob'}"
        self.partial = self.final.with_name(self.final.name + ".incomplete")
        self.sidecar = self.partial.with_name(self.partial.name + ".json")
        self.progress: list[int] = []
        self.cancel = threading.Event()

    def fetch(self, policy: RetryPolicy = FAST, **kwargs) -> int:
        arguments = {
            "session": get_session(),
            "spec": self.spec,
            "partial": self.partial,
            "final": self.final,
            "headers": {},
            "policy": policy,
            "on_progress": self.progress.append,
            "cancel": self.cancel,
            "sleep": lambda s: time.sleep(min(s, 0.01)),
            **kwargs,
        }
        return fetch_blob(**arguments)


@pytest.fixture
def blob(hub, tmp_path):
    return lambda name, **overrides: Blob(tmp_path, spec_for(hub, name, **overrides))


def source(hub_root: Path, name: str) -> Path:
    return hub_root / REPO / name


# ---------------------------------------------------------------------- success


@pytest.mark.parametrize("name", ["model.bin", "mini.bin"])
def test_download_writes_the_verified_blob(hub, hub_root, blob, name):
    b = blob(name)
    received = b.fetch()
    assert received == b.spec.size
    assert sha256_file(b.final) == sha256_file(source(hub_root, name))
    assert not b.partial.exists() and not b.sidecar.exists()
    assert b.progress[-1] == b.spec.size
    assert b.progress == sorted(b.progress)
    assert hub.ranges_seen(name) == [None]


def test_small_git_file_is_checked_against_its_git_oid(hub, hub_root, blob):
    b = blob("config.json")
    assert b.spec.sha256 is None and b.spec.git_oid
    assert b.fetch() == b.spec.size
    assert b.final.read_bytes() == source(hub_root, "config.json").read_bytes()

    wrong = blob("config.json", git_oid="0" * 40)
    with pytest.raises(ChecksumError, match="git blob sha1 mismatch"):
        wrong.fetch()


def test_empty_file_needs_no_request(hub, blob):
    b = blob("empty.txt")
    assert b.spec.git_oid == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert b.fetch() == 0
    assert b.final.read_bytes() == b""
    assert hub.request_count() == 0


def test_existing_final_returns_at_once(hub, blob):
    b = blob("mini.bin")
    b.final.parent.mkdir(parents=True)
    b.final.write_bytes(b"verified earlier")
    assert b.fetch() == 0
    assert hub.request_count() == 0


def test_cdn_redirect_drops_the_token(hub_root, tmp_path):
    """httpx2 strips Authorization on a cross-origin redirect; the Hub still gets the token."""
    with HubServer(hub_root, lfs_redirect="cdn", required_token="hf_secret") as server:
        b = Blob(tmp_path, spec_for(server, "mini.bin"))
        server.add_fault("mini.bin", "drop_after", bytes=MiB // 2)
        headers = build_hf_headers(token="hf_secret")
        assert b.fetch(headers=headers) == b.spec.size
        seen = [(r.kind, r.auth, r.range) for r in server.requests_for("mini.bin")]
    resumed = f"bytes={MiB // 2}-"  # the Range (and If-Range) follow the redirect
    assert seen == [
        ("resolve", True, None),
        ("cdn", False, None),
        ("resolve", True, resumed),
        ("cdn", False, resumed),
    ]


# ---------------------------------------------------------------------- resume


@pytest.mark.parametrize("name", ["model.bin", "mini.bin"])
def test_resume_across_processes(hub, hub_root, blob, name):
    b = blob(name)
    half = b.spec.size // 2
    hub.add_fault(name, "drop_after", bytes=half)
    with pytest.raises(NetworkError, match=rf"{name}: download failed after 1 attempt"):
        b.fetch(RetryPolicy(attempts=1, base_delay=0.01))
    assert b.partial.stat().st_size == half
    assert json.loads(b.sidecar.read_text())["validator"]
    assert not b.final.exists()

    assert b.fetch() == b.spec.size - half  # a new call, as a new process would make
    assert hub.ranges_seen(name) == [None, f"bytes={half}-"]
    assert hub.bytes_sent(name) <= 1.05 * b.spec.size
    assert sha256_file(b.final) == sha256_file(source(hub_root, name))


@pytest.mark.parametrize("name", ["model.bin", "mini.bin"])
def test_reset_mid_body_is_retried_in_the_same_call(hub, blob, name):
    b = blob(name)
    hub.add_fault(name, "drop_after", bytes=b.spec.size // 3, mode="rst")
    assert b.fetch() == b.spec.size
    assert len(hub.ranges_seen(name)) == 2
    assert hub.ranges_seen(name)[1].startswith("bytes=")
    assert hub.bytes_sent(name) <= 1.05 * b.spec.size


def test_changed_validator_restarts_cleanly(hub, hub_root, blob):
    b = blob("model.bin")
    hub.add_fault("model.bin", "drop_after", bytes=3 * MiB)
    with pytest.raises(NetworkError):
        b.fetch(RetryPolicy(attempts=1))
    sidecar = json.loads(b.sidecar.read_text())
    b.sidecar.write_text(json.dumps({**sidecar, "validator": '"changed-upstream"'}))
    b.progress.clear()

    assert b.fetch() == b.spec.size
    last = hub.requests_for("model.bin")[-1]
    assert (last.range, last.status) == ("bytes=3145728-", 200)
    assert b.progress[:2] == [3 * MiB, 0]  # resumed, then back to zero for the 200
    assert b.final.stat().st_size == b.spec.size
    assert sha256_file(b.final) == sha256_file(source(hub_root, "model.bin"))


def test_partial_larger_than_the_blob_is_redone(hub, hub_root, blob):
    b = blob("mini.bin")
    b.partial.parent.mkdir(parents=True)
    b.partial.write_bytes(os.urandom(b.spec.size + 100))
    assert b.fetch() == b.spec.size
    assert hub.ranges_seen("mini.bin") == [None]
    assert sha256_file(b.final) == sha256_file(source(hub_root, "mini.bin"))


def test_foreign_partial_without_sidecar_is_resumed_then_caught(hub, hub_root, blob):
    """A partial with wrong bytes and no validator resumes, fails the hash, and is redone."""
    b = blob("mini.bin")
    b.partial.parent.mkdir(parents=True)
    b.partial.write_bytes(b"\0" * 1000)
    assert b.fetch() == 2 * b.spec.size - 1000
    assert hub.ranges_seen("mini.bin") == ["bytes=1000-", None]
    assert sha256_file(b.final) == sha256_file(source(hub_root, "mini.bin"))


def test_wrong_expected_size_ends_in_a_checksum_error(hub, blob):
    b = blob("mini.bin", size=MiB + 10)
    b.partial.parent.mkdir(parents=True)
    b.partial.write_bytes(source(hub.root, "mini.bin").read_bytes())
    with pytest.raises(ChecksumError, match="size mismatch"):
        b.fetch()
    statuses = [r.status for r in hub.requests_for("mini.bin")]
    assert statuses == [416, 200, 200]
    assert not b.partial.exists() and not b.final.exists()


# ---------------------------------------------------------------------- faults


def test_server_errors_are_retried(hub, blob):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "status", code=500, times=2)
    assert b.fetch() == b.spec.size
    assert [r.status for r in hub.requests_for("mini.bin")] == [500, 500, 200]


def test_server_error_forever_gives_up_after_the_attempts(hub, blob):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "status", code=503, times=None)
    with pytest.raises(UpstreamError, match=r"mini.bin: download failed after 3 attempt.*HTTP 503"):
        b.fetch(RetryPolicy(attempts=3, base_delay=0.01))
    assert hub.request_count("mini.bin") == 3


@pytest.mark.parametrize(("retry_after", "max_delay", "slept"), [(2, 30.0, 2.0), (100, 3.0, 3.0)])
def test_rate_limit_honours_retry_after(hub, blob, retry_after, max_delay, slept):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "status", code=429, retry_after=retry_after)
    naps: list[float] = []
    assert b.fetch(RetryPolicy(base_delay=0.01, max_delay=max_delay), sleep=naps.append)
    assert sum(naps) == pytest.approx(slept)
    assert max(naps) <= 0.1  # slept in slices, to see a cancel
    assert [r.status for r in hub.requests_for("mini.bin")] == [429, 200]


def test_backoff_grows_exponentially_with_jitter(hub, blob):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "status", code=502, times=3)
    naps: list[float] = []
    policy = RetryPolicy(base_delay=0.2, max_delay=0.5, jitter=0.25)
    b.fetch(policy, sleep=naps.append)
    assert sum(naps) == pytest.approx(0.2 + 0.4 + 0.5, rel=0.25)


def test_connection_refused_is_a_network_error(blob):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = blob("mini.bin", url=f"http://127.0.0.1:{port}/{REPO}/resolve/main/mini.bin")
    with pytest.raises(NetworkError, match=r"after 2 attempt.*ConnectError"):
        b.fetch(RetryPolicy(attempts=2, base_delay=0.01))


def test_stalled_server_times_out(hub, blob):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "stall", seconds=1, times=None)
    with pytest.raises(TimedOut, match=r"after 2 attempt.*ReadTimeout"):
        b.fetch(RetryPolicy(attempts=2, base_delay=0.01, read_timeout=0.2))


@pytest.mark.parametrize("name", ["model.bin", "mini.bin"])
def test_a_stall_that_recurs_after_progress_does_not_exhaust_the_attempts(hub, blob, name):
    """Each try brings new bytes before the connection goes quiet: the count starts again."""
    b = blob(name)
    step = b.spec.size // 8
    hub.add_fault(name, "stall", seconds=1.5, after_bytes=step, times=7)
    retries = []
    policy = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, read_timeout=0.3)
    assert b.fetch(policy, on_retry=lambda: retries.append(1))
    assert sha256_file(b.final) == b.spec.sha256
    ranges = hub.ranges_seen(name)
    assert len(ranges) == 8 and len(retries) == 7  # one callback per further request
    assert ranges[1:] == [f"bytes={i * step}-" for i in range(1, 8)]


def test_progress_starts_the_count_of_failures_again(hub, blob):
    b = blob("mini.bin")
    for after_bytes, times in ((0, 2), (100_000, 1), (0, 1)):
        hub.add_fault("mini.bin", "stall", seconds=1.5, after_bytes=after_bytes, times=times)
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, read_timeout=0.3)
    assert b.fetch(policy)  # 2 quiet tries, 1 with progress, 1 quiet, then the body: 5 tries
    assert hub.request_count("mini.bin") == 5


def test_a_stall_without_progress_fails_after_the_attempts(hub, blob):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "stall", seconds=1.5, times=None)
    retries = []
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, read_timeout=0.3)
    with pytest.raises(TimedOut, match=r"after 3 attempt\(s\) \(3 in a row since the last"):
        b.fetch(policy, on_retry=lambda: retries.append(1))
    assert hub.request_count("mini.bin") == 3 and len(retries) == 2


@pytest.mark.parametrize(
    ("status", "error"), [(404, NotFound), (401, AuthError), (403, AuthError), (400, UpstreamError)]
)
def test_client_errors_are_fatal_at_once(hub, blob, status, error):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "status", code=status)
    with pytest.raises(error, match=r"mini\.bin"):
        b.fetch()
    assert hub.request_count("mini.bin") == 1


def test_bad_token_is_an_auth_error_without_the_token(hub, blob):
    hub.required_token = "hf_right"
    b = blob("mini.bin")
    with pytest.raises(AuthError, match="gated") as caught:
        b.fetch(headers={"Authorization": "Bearer hf_wrong_secret"})
    assert "hf_wrong_secret" not in str(caught.value)
    assert "Authorization" not in str(caught.value)
    assert hub.request_count("mini.bin") == 1


# ---------------------------------------------------------------------- checksums


@pytest.mark.parametrize("name", ["model.bin", "mini.bin"])
def test_corrupt_once_is_downloaded_again(hub, hub_root, blob, name):
    b = blob(name)
    hub.add_fault(name, "corrupt")
    assert b.fetch() == 2 * b.spec.size
    assert hub.ranges_seen(name) == [None, None]
    assert 0 in b.progress[1:]  # back to zero for the second download
    assert sha256_file(b.final) == sha256_file(source(hub_root, name))


def test_corrupt_always_is_a_checksum_error(hub, blob):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "corrupt", times=None)
    with pytest.raises(ChecksumError) as caught:
        b.fetch()
    message = str(caught.value)
    assert "mini.bin" in message and b.spec.sha256 in message and "got " in message
    assert hub.request_count("mini.bin") == 2
    assert not b.final.exists() and not b.partial.exists() and not b.sidecar.exists()


def test_wrong_pinned_sha256_is_a_checksum_error(blob):
    b = blob("mini.bin", pinned_sha256="ab" * 32)
    with pytest.raises(ChecksumError, match="pinned sha256 mismatch: expected abab"):
        b.fetch()
    assert not b.final.exists() and not b.partial.exists()


# ---------------------------------------------------------------------- cancel and disk


def test_cancel_keeps_the_partial_for_a_later_resume(hub, hub_root, blob):
    b = blob("model.bin")
    hub.add_fault("model.bin", "throttle", bytes_per_sec=200_000)
    set_at: list[float] = []

    def cancel() -> None:
        set_at.append(time.monotonic())
        b.cancel.set()

    timer = threading.Timer(0.5, cancel)
    timer.start()
    try:
        with pytest.raises(Cancelled, match=r"model\.bin: download cancelled"):
            b.fetch()
        raised_at = time.monotonic()
    finally:
        timer.cancel()
    assert raised_at - set_at[0] < 1.0
    kept = b.partial.stat().st_size
    assert 0 < kept < b.spec.size
    assert b.sidecar.exists()

    hub.clear_faults()
    b.cancel.clear()
    assert b.fetch() == b.spec.size - kept
    assert hub.ranges_seen("model.bin")[-1] == f"bytes={kept}-"
    assert sha256_file(b.final) == sha256_file(source(hub_root, "model.bin"))


def test_cancel_during_backoff(hub, blob):
    b = blob("mini.bin")
    hub.add_fault("mini.bin", "status", code=503, times=None)
    threading.Timer(0.3, b.cancel.set).start()
    began = time.monotonic()
    with pytest.raises(Cancelled):
        b.fetch(RetryPolicy(base_delay=5.0, max_delay=5.0), sleep=time.sleep)
    assert time.monotonic() - began < 1.0


def test_full_disk_keeps_the_partial(hub, blob, small_filesystem):
    b = blob("model.bin")
    b.final = small_filesystem("2m") / "blobs" / "model"
    b.partial = b.final.with_name("model.incomplete")
    with pytest.raises(DiskSpace, match=r"model\.bin: no space left") as caught:
        b.fetch()
    assert caught.value.code == "ERR_DISK_SPACE"
    assert 0 < b.partial.stat().st_size <= 2 * MiB
    assert b.partial.with_name("model.incomplete.json").exists()
    assert hub.request_count("model.bin") == 1


def test_a_download_cut_by_a_full_disk_resumes_once_there_is_room(
    hub, hub_root, blob, small_filesystem
):
    """What was written before the disk filled is kept, and a later download resumes from it
    (the sink hashes a buffer before it writes it, so the resume hashes the partial again)."""
    b = blob("model.bin")
    b.final = small_filesystem("2m") / "blobs" / "model"
    b.partial = b.final.with_name("model.incomplete")
    with pytest.raises(DiskSpace):
        b.fetch()
    kept = b.partial.stat().st_size
    subprocess.run(
        ["mount", "-o", "remount,size=16m", str(b.final.parent.parent)], check=True
    )  # fmt: skip
    assert b.fetch() == b.spec.size - kept
    assert hub.ranges_seen("model.bin")[-1] == f"bytes={kept}-"
    assert sha256_file(b.final) == sha256_file(source(hub_root, "model.bin"))


def test_full_disk_seen_at_fsync_keeps_the_partial(hub, blob, monkeypatch):
    """A mock: some filesystems report ENOSPC only at fsync, which tmpfs cannot reproduce."""

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fetch_transfer.os, "fsync", full)
    b = blob("mini.bin")
    with pytest.raises(DiskSpace):
        b.fetch()
    assert b.partial.stat().st_size == b.spec.size
    assert not b.final.exists()


# ---------------------------------------------------------------------- memory


def test_memory_stays_flat(hub, hub_root, blob):
    b = blob("big.bin")
    tracemalloc.start()
    try:
        assert b.fetch() == b.spec.size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"
    digest = hashlib.sha256()
    with open(b.final, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    assert digest.hexdigest() == b.spec.sha256


def test_plain_httpx_client_works_too(hub, blob):
    b = blob("model.bin")
    with httpx2.Client() as client:
        assert b.fetch(session=client) == b.spec.size


def spy_direct_reads(monkeypatch) -> list[int]:
    """Record the offset at which each direct socket read starts."""
    calls: list[int] = []
    original = fetch_transfer._BlobFetch._pump_socket

    def spy(self, sock, sink):
        calls.append(sink.written)
        return original(self, sock, sink)

    monkeypatch.setattr(fetch_transfer._BlobFetch, "_pump_socket", spy)
    return calls


@pytest.mark.parametrize(("name", "direct"), [("model.bin", True), ("mini.bin", False)])
def test_big_bodies_are_read_from_the_socket(hub, blob, monkeypatch, name, direct):
    direct_reads = spy_direct_reads(monkeypatch)
    b = blob(name)
    assert b.fetch() == b.spec.size
    assert bool(direct_reads) is direct


# ---------------------------------------------------------------------- answers the hub never gives


def mock_spec(data: bytes) -> BlobSpec:
    return BlobSpec(
        url="http://hub.test/acme/blobs/resolve/0123/odd.bin",
        path="odd.bin",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        git_oid=None,
    )


def test_partial_content_at_another_offset_restarts(tmp_path):
    """A mock transport: the fake hub always honours the Range it is sent."""
    data = os.urandom(100_000)
    seen: list[str | None] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.headers.get("Range"))
        if "Range" in request.headers:
            return httpx2.Response(
                206, headers={"Content-Range": "bytes 10-99999/100000"}, content=data[10:]
            )
        return httpx2.Response(200, content=data)

    b = Blob(tmp_path, mock_spec(data))
    b.partial.parent.mkdir(parents=True)
    b.partial.write_bytes(data[:500])
    with httpx2.Client(transport=httpx2.MockTransport(answer)) as client:
        b.fetch(session=client)  # (the wire count needs a real transport)
    assert seen == ["bytes=500-", None]
    assert b.final.read_bytes() == data


def test_compressed_body_is_decoded(tmp_path):
    """A mock transport: the fake hub never compresses, the Hub may (text files)."""
    import gzip

    data = b'{"vocab": "' + b"abc" * 30_000 + b'"}'

    def answer(request: httpx2.Request) -> httpx2.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return httpx2.Response(
            200, headers={"Content-Encoding": "gzip"}, content=gzip.compress(data)
        )

    b = Blob(tmp_path, mock_spec(data))
    with httpx2.Client(transport=httpx2.MockTransport(answer)) as client:
        b.fetch(session=client)
    assert b.final.read_bytes() == data


def test_retry_after_may_be_a_date():
    later = time.time() + 20
    header = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(later))
    assert fetch_http._retry_after(header, 30.0) == pytest.approx(20, abs=1.5)
    assert fetch_http._retry_after(header, 5.0) == 5.0
    assert fetch_http._retry_after("soon", 5.0) is None


# ---------------------------------------------------------------------- TLS, as on the real Hub


@pytest.fixture
def tls_hub(hub_root, tmp_path):
    """Serve the repo over HTTPS with a throwaway certificate for 127.0.0.1."""
    import datetime
    import ipaddress
    import ssl
    import types

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    server = HubServer(hub_root).start()
    httpd = server._httpd
    plain_accept = httpd.get_request

    def get_request(self):
        conn, address = plain_accept()
        return server_context.wrap_socket(conn, server_side=True), address

    httpd.get_request = types.MethodType(get_request, httpd)
    client = httpx2.Client(verify=ssl.create_default_context(cafile=str(cert_file)))
    yield server, client
    client.close()
    server.stop()


def test_tls_body_is_read_from_the_socket_and_resumed(tls_hub, hub_root, tmp_path, monkeypatch):
    server, client = tls_hub
    direct_reads = spy_direct_reads(monkeypatch)
    plain = spec_for(server, "model.bin")
    b = Blob(tmp_path, dataclasses.replace(plain, url=plain.url.replace("http:", "https:", 1)))
    server.add_fault("model.bin", "drop_after", bytes=2 * MiB, mode="rst")
    assert b.fetch(session=client) == b.spec.size
    assert len(direct_reads) == 2  # both tries read the rest of the body from the SSL socket
    first, resumed = server.ranges_seen("model.bin")
    assert first is None and resumed.startswith("bytes=")
    assert server.bytes_sent("model.bin") <= 1.05 * b.spec.size
    assert sha256_file(b.final) == sha256_file(source(hub_root, "model.bin"))


# ---------------------------------------------------------------------- the package's imports


def test_the_package_imports_have_no_cycle():
    # Read every import, those under TYPE_CHECKING too: the leaf types live in spec.py, which
    # imports nothing from the package, so no module needs a cycle-breaking trick.
    package = Path(fetch_transfer.__file__).parent
    imports = {}
    for module in package.glob("*.py"):
        tree = ast.parse(module.read_text())
        imports[module.stem] = {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1
        }
    assert imports["spec"] == set()

    def reaches(start: str, target: str, seen: frozenset = frozenset()) -> bool:
        return any(
            name == target or (name not in seen and reaches(name, target, seen | {name}))
            for name in imports.get(start, ())
        )

    assert [name for name in imports if reaches(name, name)] == []
