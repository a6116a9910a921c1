"""Serve a fake Hugging Face Hub over HTTP for tests, benchmarks and browser tests.

The server speaks the subset of the Hub protocol that ``huggingface_hub`` 2.4.0 uses to read
model repos, so the *unmodified* client functions work against it:

* ``HfApi().model_info(repo_id, revision=..., files_metadata=True)``
  -> ``GET /api/models/{org}/{name}[/revision/{rev}]?blobs=true``
* ``HfApi().list_repo_tree(repo_id, revision=..., recursive=True)``
  -> ``GET /api/models/{org}/{name}/tree/{rev}[/{path}]?recursive=True&expand=False``
  (paginated with a GitHub style ``Link: <...>; rel="next"`` header)
* ``get_hf_file_metadata(hf_hub_url(...))`` -> ``HEAD /{org}/{name}/resolve/{rev}/{path}``
* ``hf_hub_download(...)`` / ``snapshot_download(...)`` -> the above plus
  ``GET /{org}/{name}/resolve/{rev}/{path}`` (with ``Range: bytes=N-`` when resuming).

Pointing the client at the server
---------------------------------
``huggingface_hub`` copies ``HF_ENDPOINT`` into ``huggingface_hub.constants.ENDPOINT`` (and into
``HUGGINGFACE_CO_URL_TEMPLATE``) at import time, so setting the variable after the import has no
effect. Two ways work:

* In another process: export ``HF_ENDPOINT=http://127.0.0.1:PORT`` before Python starts (or
  before the first ``import huggingface_hub``); every client call then uses the server.
* In-process (what ``tests/test_hub_server.py`` does): pass ``endpoint=server.url`` to
  ``HfApi(endpoint=...)``, ``hf_hub_url(...)``, ``get_hf_file_metadata(...)``,
  ``hf_hub_download(...)`` and ``snapshot_download(...)``. ``hf_hub_url`` builds the URL from
  ``constants.ENDPOINT`` and then swaps that prefix for ``endpoint``, so no monkeypatching of
  ``constants`` is needed. Always pass ``cache_dir=`` (or ``HF_HUB_CACHE``) to keep the real
  cache untouched, and ``token=False`` unless a token is wanted (otherwise the client sends the
  token from ``HF_TOKEN`` / ``~/.cache/huggingface/token``).

Xet is never used: the client only switches to Xet when a resolve response carries
``X-Xet-Hash`` plus a refresh route (header or ``Link: rel="xet-auth"``), or when a cached tree
entry has a ``xetHash``. This server emits none of them, so downloads always take the plain HTTP
path (``http_get``), whether or not ``hf_xet`` is installed.

Repos on disk
-------------
``HubServer(root)`` serves every directory ``root/<org>/<name>/`` as the model repo
``<org>/<name>`` with a single commit whose sha is derived from the content. ``main`` and the
commit sha are the only valid revisions. Files of ``lfs_threshold`` bytes or more are LFS files
(``ETag``/``X-Linked-Etag`` = sha256), smaller ones are git blobs (``ETag`` = git blob sha1).
Hashes are computed lazily, in chunks, and cached by (path, size, mtime), so the first request
to a repo holding huge files pays the hashing cost; call ``server.warm()`` to pay it up front.

Faults, accounting and control
------------------------------
``server.add_fault(pattern, kind, **params)`` injects failures (see ``HubServer.add_fault``);
``server.requests`` / ``server.bytes_sent(path)`` expose what was served. Processes that do not
share memory with the server (CLI mode) use the JSON control endpoints under ``/_control/``.

Command line
------------
``python tests/hub_server.py --root DIR [--port P]`` serves in the foreground and prints
``HubServer listening on http://127.0.0.1:PORT`` once ready.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "FileMeta",
    "HubServer",
    "RequestRecord",
    "iter_random_bytes",
    "main",
    "make_repo",
    "sha256_file",
]

DEFAULT_LFS_THRESHOLD = 1024
DEFAULT_CHUNK_SIZE = 256 * 1024
# The Hub pages tree listings by 1000 entries, or 50 when `expand=True`.
DEFAULT_TREE_PAGE_SIZE = 1000
EXPANDED_TREE_PAGE_SIZE = 50
HASH_CHUNK_SIZE = 1024 * 1024
# An unfaulted body goes out in sendfile steps of this size (each counted before it is sent).
_SENDFILE_STEP = 4 * 1024 * 1024

FAULT_KINDS = ("drop_after", "status", "throttle", "corrupt", "stall")
_DEFAULT_TIMES: dict[str, int | None] = {
    "drop_after": 1,
    "status": 1,
    "throttle": None,
    "corrupt": 1,
    "stall": 1,
}
_FAULT_PARAMS: dict[str, tuple[set[str], set[str]]] = {
    # kind: (required params, optional params)
    "drop_after": ({"bytes"}, {"mode"}),
    "status": ({"code"}, {"retry_after", "message"}),
    "throttle": ({"bytes_per_sec"}, set()),
    "corrupt": (set(), set()),
    "stall": ({"seconds"}, {"after_bytes"}),
}
LFS_REDIRECT_MODES = (None, "cdn", "same-host")

# Flip every bit: same length, guaranteed different content, and `bytes.translate` runs in C.
_FLIP_TABLE = bytes(255 - i for i in range(256))
_UNSET: Any = object()
_COMMIT_TITLE = "Initial commit"


def sha256_file(path: str | os.PathLike[str], chunk_size: int = HASH_CHUNK_SIZE) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_oid(path: Path, size: int) -> str:
    """Return the git blob sha1 of a file (``sha1(b"blob <size>\\0" + content)``)."""
    digest = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the git-lfs pointer file that git stores instead of an LFS file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def iter_random_bytes(
    size: int, *, seed: int | str = 0, chunk_size: int = 1 << 20
) -> Iterator[bytes]:
    """Yield ``size`` deterministic pseudo-random bytes in chunks of at most ``chunk_size``.

    Each chunk is a window of a random pool at a pseudo-random offset: generating 1 GiB costs
    memcpy time instead of PRNG time, and any byte-offset mistake (bad resume, wrong range)
    still changes the content, which is what tests need.
    """
    key = f"hub-server:{seed}".encode()
    pool_span = 4 << 20
    pool = hashlib.shake_128(key).digest(pool_span + chunk_size)
    offsets = random.Random(key)
    remaining = size
    while remaining > 0:
        n = min(chunk_size, remaining)
        start = offsets.randrange(pool_span)
        yield pool[start : start + n]
        remaining -= n


def make_repo(
    root: str | os.PathLike[str],
    repo_id: str,
    files: Mapping[str, bytes | str | int],
    *,
    seed: int = 0,
) -> Path:
    """Write the files of repo ``repo_id`` under ``root`` and return the repo directory.

    A ``bytes``/``str`` value is written as is; an ``int`` means that many deterministic random
    bytes (seeded by ``seed`` and the file path), streamed to disk so large files never sit in
    memory. Existing files not listed in ``files`` are kept.
    """
    org, sep, name = repo_id.partition("/")
    if not sep or not org or not name or "/" in name:
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    repo_dir = Path(root) / org / name
    repo_dir.mkdir(parents=True, exist_ok=True)
    for rel_path, content in files.items():
        target = repo_dir / _safe_rel_path(rel_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            if isinstance(content, int):
                for chunk in iter_random_bytes(content, seed=f"{seed}:{repo_id}:{rel_path}"):
                    f.write(chunk)
            elif isinstance(content, str):
                f.write(content.encode())
            else:
                f.write(content)
    return repo_dir


def _safe_rel_path(rel_path: str) -> str:
    """Return ``rel_path`` if it stays inside its repo, else raise ``ValueError``."""
    parts = rel_path.split("/")
    if not rel_path or rel_path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid repo path {rel_path!r}")
    return rel_path


def _iso(ts: float) -> str:
    """Format a POSIX timestamp the way the Hub does (``2024-01-02T03:04:05.000Z``)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _normalize_etag(value: str) -> str:
    """Strip the weak prefix and the quotes of an entity tag, like the client does."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def _truthy(values: list[str] | None) -> bool:
    """Interpret a query parameter the way the Hub does (``true``/``True``/``1``)."""
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class FileMeta:
    """Describe one file of a served repo."""

    path: str
    size: int
    is_lfs: bool
    #: git blob sha1 (of the LFS pointer file for LFS files), reported as `oid` / `blobId`.
    git_oid: str
    #: sha256 of the content, only for LFS files.
    sha256: str | None
    pointer_size: int | None

    @property
    def etag(self) -> str:
        """Return the entity tag the Hub reports: sha256 for LFS files, the git oid otherwise."""
        return self.sha256 if self.is_lfs and self.sha256 else self.git_oid


@dataclass(frozen=True)
class _Repo:
    repo_id: str
    directory: Path
    commit: str
    files: dict[str, FileMeta]
    last_modified: float


@dataclass
class Fault:
    """Describe one injected fault; ``fired`` counts how many responses it affected."""

    id: int
    pattern: str
    kind: str
    params: dict[str, Any]
    times: int | None
    methods: frozenset[str]
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        """Return whether the fault has been applied ``times`` times already."""
        return self.times is not None and self.fired >= self.times

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable description."""
        data = asdict(self)
        data["methods"] = sorted(self.methods)
        return data


@dataclass
class RequestRecord:
    """Log entry of one request served (control requests are not logged)."""

    method: str
    path: str
    kind: str  # "api", "resolve", "cdn" or "other"
    repo_id: str | None
    file: str | None
    range: str | None
    status: int = 0
    bytes_sent: int = 0
    fault: str | None = None
    #: Whether the request carried an ``Authorization`` header (the client drops it for CDNs).
    auth: bool = False
    time: float = field(default_factory=time.time)


class _HashCache:
    """Cache file hashes by (path, size, mtime) and hash each file once even under concurrency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, int, int, bool], tuple[str, str | None]] = {}
        self._key_locks: dict[tuple[str, int, int, bool], threading.Lock] = {}

    def get(self, path: Path, size: int, mtime_ns: int, is_lfs: bool) -> tuple[str, str | None]:
        key = (str(path), size, mtime_ns, is_lfs)
        with self._lock:
            if key in self._values:
                return self._values[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # Hash outside the global lock so that different files hash in parallel, but behind a
        # per-file lock so that concurrent first requests do not hash a 1 GiB file twice.
        with key_lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            if is_lfs:
                # Git stores the pointer file, so the blob oid of an LFS file is the pointer's.
                sha = sha256_file(path)
                pointer = _lfs_pointer(sha, size)
                oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
                value: tuple[str, str | None] = (oid, sha)
            else:
                value = (_git_blob_oid(path, size), None)
            with self._lock:
                self._values[key] = value
                self._key_locks.pop(key, None)
            return value


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # snapshot_download runs 8 workers and keeps connections alive; avoid refused connections.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], hub: HubServer, *, is_cdn: bool) -> None:
        self.hub = hub
        self.is_cdn = is_cdn
        super().__init__(address, _Handler)


class _BodyFaults:
    """Faults that shape one response body."""

    def __init__(self, faults: list[Fault]) -> None:
        self.drop_bytes: int | None = None
        self.drop_mode = "fin"
        self.rate: float | None = None
        self.corrupt = False
        self.stall = 0.0
        self.stall_after = 0
        self.names: list[str] = []
        for fault in faults:
            self.names.append(fault.kind)
            if fault.kind == "drop_after":
                self.drop_bytes = int(fault.params["bytes"])
                self.drop_mode = fault.params.get("mode", "fin")
            elif fault.kind == "throttle":
                self.rate = float(fault.params["bytes_per_sec"])
            elif fault.kind == "corrupt":
                self.corrupt = True
            elif fault.kind == "stall":
                self.stall = float(fault.params["seconds"])
                self.stall_after = int(fault.params.get("after_bytes", 0))


class HubServer:
    """Serve the repos under ``root`` with the Hugging Face Hub HTTP API.

    Args:
        root: directory holding ``<org>/<name>/`` repo folders.
        lfs_threshold: files of at least this many bytes are LFS files.
        lfs_redirect: how ``resolve`` serves LFS files. ``None`` answers 200/206 directly;
            ``"cdn"`` answers 302 to a second listener on another port (like the Hub's CDN: the
            client does not follow it on HEAD, drops the ``Authorization`` header and GETs the
            CDN URL); ``"same-host"`` answers 302 with a relative ``/cdn/...`` Location on the
            same origin, which the client follows on HEAD.
        required_token: when set, Hub endpoints (not the CDN) answer 401 ``GatedRepo`` unless
            the request carries ``Authorization: Bearer <token>``. Can be changed at runtime.
        host, port, cdn_port: listening address; port 0 picks a free port.
        tree_page_size: entries per tree page (the Hub uses 1000); lower it to test pagination.
        chunk_size: body write size.
        verbose: log each request to stderr.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        lfs_redirect: str | None = None,
        required_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        tree_page_size: int = DEFAULT_TREE_PAGE_SIZE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        verbose: bool = False,
    ) -> None:
        if lfs_redirect not in LFS_REDIRECT_MODES:
            raise ValueError(
                f"lfs_redirect must be one of {LFS_REDIRECT_MODES}, got {lfs_redirect!r}"
            )
        self.root = Path(root)
        self.lfs_threshold = lfs_threshold
        self.lfs_redirect = lfs_redirect
        self.required_token = required_token
        self.tree_page_size = tree_page_size
        self.chunk_size = chunk_size
        self.verbose = verbose
        self._host = host
        self._port = port
        self._cdn_port = cdn_port
        self._lock = threading.Lock()
        self._hashes = _HashCache()
        self._faults: list[Fault] = []
        self._next_fault_id = 1
        self._records: list[RequestRecord] = []
        self._bytes: dict[tuple[str, str], int] = {}
        self._repo_meta: dict[str, dict[str, Any]] = {}
        # repo id -> (the token that has access, whether the API refuses too): gate_repo.
        self._gates: dict[str, tuple[str, bool]] = {}
        self._connections: set[socket.socket] = set()
        self._httpd: _HubHTTPServer | None = None
        self._cdn_httpd: _HubHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Return the base URL (``http://127.0.0.1:PORT``); use it as ``HF_ENDPOINT``."""
        if self._httpd is None:
            raise RuntimeError("server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        """Return the bound port."""
        return int(self._httpd.server_address[1]) if self._httpd else self._port

    @property
    def cdn_url(self) -> str | None:
        """Return the base URL of the fake CDN, when ``lfs_redirect="cdn"``."""
        if self._cdn_httpd is None:
            return None
        host, port = self._cdn_httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        """Bind the port(s) and serve in daemon threads; return ``self``."""
        if self._httpd is not None:
            return self
        self._httpd = _HubHTTPServer((self._host, self._port), self, is_cdn=False)
        servers = [self._httpd]
        if self.lfs_redirect == "cdn":
            self._cdn_httpd = _HubHTTPServer((self._host, self._cdn_port), self, is_cdn=True)
            servers.append(self._cdn_httpd)
        for httpd in servers:
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"hub-server-{httpd.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port(s)."""
        servers = [s for s in (self._httpd, self._cdn_httpd) if s is not None]
        for httpd in servers:
            httpd.shutdown()
        # Keep-alive connections of the client's pooled session would otherwise keep handler
        # threads (and sockets) alive until the process exits.
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for httpd in servers:
            httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        self._httpd = None
        self._cdn_httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def warm(self) -> None:
        """Hash every file of every repo now, so no request waits for hashing."""
        for repo_id in self.repo_ids():
            self._load_repo(repo_id)

    # ------------------------------------------------------------------ repos

    def repo_ids(self) -> list[str]:
        """Return the ids of the repos found under ``root``."""
        if not self.root.is_dir():
            return []
        return sorted(
            f"{org.name}/{repo.name}"
            for org in self.root.iterdir()
            if org.is_dir()
            for repo in org.iterdir()
            if repo.is_dir()
        )

    def repo_commit(self, repo_id: str) -> str:
        """Return the commit sha of ``repo_id``."""
        repo = self._load_repo(repo_id)
        if repo is None:
            raise KeyError(repo_id)
        return repo.commit

    def file_meta(self, repo_id: str, path: str) -> FileMeta:
        """Return the metadata the server reports for one file."""
        repo = self._load_repo(repo_id)
        if repo is None:
            raise KeyError(repo_id)
        return repo.files[path]

    def set_repo_meta(self, repo_id: str, **fields: Any) -> None:
        """Merge extra fields (``tags``, ``gated``, ``cardData``, ...) into the model info JSON."""
        with self._lock:
            self._repo_meta.setdefault(repo_id, {}).update(fields)

    def gate_repo(
        self, repo_id: str, *, token: str, gated: str = "auto", api: bool = False
    ) -> None:
        """Gate one repo as the Hub does: its model info says ``gated``, and its files answer
        401 ``GatedRepo`` without a token and 403 ``GatedRepo`` with another one than
        ``token``. The Hub lists a gated repo to anyone; ``api=True`` refuses the API too.
        """
        self.set_repo_meta(repo_id, gated=gated)
        with self._lock:
            self._gates[repo_id] = (token, api)

    def ungate_repo(self, repo_id: str) -> None:
        """Open a repo that ``gate_repo`` gated."""
        with self._lock:
            self._gates.pop(repo_id, None)
            self._repo_meta.get(repo_id, {}).pop("gated", None)

    def _load_repo(self, repo_id: str) -> _Repo | None:
        org, _, name = repo_id.partition("/")
        if not org or not name or org.startswith(".") or name.startswith(".") or "/" in name:
            return None
        directory = self.root / org / name
        if not directory.is_dir():
            return None
        files: dict[str, FileMeta] = {}
        last_modified = 0.0
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for filename in filenames:
                abs_path = Path(dirpath) / filename
                rel_path = abs_path.relative_to(directory).as_posix()
                try:
                    st = abs_path.stat()
                except FileNotFoundError:
                    continue  # deleted while walking
                is_lfs = st.st_size >= self.lfs_threshold
                git_oid, sha = self._hashes.get(abs_path, st.st_size, st.st_mtime_ns, is_lfs)
                pointer_size = len(_lfs_pointer(sha, st.st_size)) if sha else None
                files[rel_path] = FileMeta(rel_path, st.st_size, is_lfs, git_oid, sha, pointer_size)
                last_modified = max(last_modified, st.st_mtime)
        files = dict(sorted(files.items()))
        commit = hashlib.sha1(
            "".join(f"{path}\0{meta.etag}\n" for path, meta in files.items()).encode()
        ).hexdigest()
        return _Repo(repo_id, directory, commit, files, last_modified or time.time())

    # ------------------------------------------------------------------ faults

    def add_fault(
        self,
        pattern: str,
        kind: str,
        *,
        times: int | None = _UNSET,
        methods: tuple[str, ...] | list[str] | None = None,
        **params: Any,
    ) -> Fault:
        """Inject a fault into the responses for files matching ``pattern``.

        ``pattern`` is an ``fnmatch`` glob tested against the repo path (``model.bin``,
        ``sub/*.gguf``), ``<repo_id>/<path>``, the file's basename, and the URL path (so
        ``/api/models/*`` targets API calls). Kinds and their parameters:

        * ``drop_after`` (``bytes=N``, ``mode="fin"|"rst"``): cut the GET body after N bytes,
          closing the socket (FIN) or resetting it (RST, via ``SO_LINGER (1, 0)``).
        * ``status`` (``code=...``, ``retry_after=S``, ``message=...``): answer that status.
          429 always carries ``Retry-After`` (default 1); 401/403 carry ``X-Error-Code:
          GatedRepo``; 404 carries ``EntryNotFound``/``RepoNotFound``.
        * ``throttle`` (``bytes_per_sec=R``): pace the body.
        * ``corrupt``: serve the body with every bit flipped (same length).
        * ``stall`` (``seconds=S``, ``after_bytes=N``): sleep after the headers, before the body,
          or after the body's first N bytes (counted from the start of this response, so a
          resumed request stalls N bytes further on); then the rest of the body follows.

        ``times`` is how many responses are affected (``None`` = all; default 1, unlimited for
        ``throttle``). ``methods`` defaults to GET and HEAD for ``status`` and GET otherwise.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        required, optional = _FAULT_PARAMS[kind]
        missing = required - params.keys()
        unknown = params.keys() - required - optional
        if missing or unknown:
            raise TypeError(
                f"fault {kind!r}: missing params {sorted(missing)},"
                f" unknown params {sorted(unknown)}"
            )
        if kind == "drop_after" and params.get("mode", "fin") not in ("fin", "rst"):
            raise ValueError("drop_after mode must be 'fin' or 'rst'")
        if times is _UNSET:
            times = _DEFAULT_TIMES[kind]
        if methods is None:
            methods = ("GET", "HEAD") if kind == "status" else ("GET",)
        with self._lock:
            fault = Fault(
                id=self._next_fault_id,
                pattern=pattern,
                kind=kind,
                params=dict(params),
                times=times,
                methods=frozenset(m.upper() for m in methods),
            )
            self._next_fault_id += 1
            self._faults.append(fault)
        return fault

    def remove_fault(self, fault: Fault | int) -> None:
        """Remove one fault (object or id)."""
        fault_id = fault if isinstance(fault, int) else fault.id
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """Return the active faults (exhausted ones included, to inspect ``fired``)."""
        with self._lock:
            return list(self._faults)

    def _take_faults(
        self, method: str, candidates: list[str], kinds: tuple[str, ...]
    ) -> list[Fault]:
        """Consume and return the first live fault of each kind matching the request."""
        taken: dict[str, Fault] = {}
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds or fault.kind in taken or fault.exhausted:
                    continue
                if method not in fault.methods:
                    continue
                if any(fnmatch.fnmatchcase(c, fault.pattern) for c in candidates):
                    fault.fired += 1
                    taken[fault.kind] = fault
        return list(taken.values())

    # ------------------------------------------------------------------ accounting

    @property
    def requests(self) -> list[RequestRecord]:
        """Return a copy of the request log (method, path, range, status, bytes...)."""
        with self._lock:
            return list(self._records)

    def requests_for(self, path: str, method: str | None = None) -> list[RequestRecord]:
        """Return the logged requests for one file (``path`` or ``repo_id/path``)."""
        return [
            r
            for r in self.requests
            if r.file is not None
            and path in (r.file, f"{r.repo_id}/{r.file}")
            and (method is None or r.method == method)
        ]

    def request_count(self, path: str | None = None, method: str | None = None) -> int:
        """Return how many requests hit one file (or any request, when ``path`` is None)."""
        if path is None:
            return sum(1 for r in self.requests if method is None or r.method == method)
        return len(self.requests_for(path, method))

    def ranges_seen(self, path: str) -> list[str | None]:
        """Return the ``Range`` header of every GET of one file, in order."""
        return [r.range for r in self.requests_for(path, "GET")]

    def bytes_sent(self, path: str | None = None) -> int:
        """Return the body bytes written for one file (``path`` or ``repo_id/path``), or in all."""
        with self._lock:
            return sum(
                n
                for (repo_id, file), n in self._bytes.items()
                if path is None or path in (file, f"{repo_id}/{file}")
            )

    def reset_counters(self) -> None:
        """Forget the request log and the byte counters."""
        with self._lock:
            self._records.clear()
            self._bytes.clear()

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)
        if self.verbose:
            print(
                f"{record.method} {record.path} range={record.range} -> {record.status}"
                + (f" fault={record.fault}" if record.fault else ""),
                file=sys.stderr,
                flush=True,
            )

    def _count(self, record: RequestRecord, n: int, file_body: bool) -> None:
        with self._lock:
            record.bytes_sent += n
            # Error/JSON bodies of a file URL are not bytes of that file.
            if file_body and record.repo_id is not None and record.file is not None:
                key = (record.repo_id, record.file)
                self._bytes[key] = self._bytes.get(key, 0) + n

    def stats(self) -> dict[str, Any]:
        """Return the counters as JSON-friendly data (used by ``GET /_control/stats``)."""
        with self._lock:
            return {
                "requests": [asdict(r) for r in self._records],
                "bytes_sent": {f"{repo}/{file}": n for (repo, file), n in self._bytes.items()},
            }

    # ------------------------------------------------------------------ JSON documents

    def _model_info(self, repo: _Repo, query: dict[str, list[str]]) -> dict[str, Any]:
        with_blobs = _truthy(query.get("blobs"))
        siblings = []
        for meta in repo.files.values():
            sibling: dict[str, Any] = {"rfilename": meta.path}
            if with_blobs:
                sibling["size"] = meta.size
                sibling["blobId"] = meta.git_oid
                if meta.is_lfs:
                    sibling["lfs"] = {
                        "sha256": meta.sha256,
                        "size": meta.size,
                        "pointerSize": meta.pointer_size,
                    }
            siblings.append(sibling)
        org = repo.repo_id.split("/")[0]
        tags = sorted(
            {"gguf" for p in repo.files if p.endswith(".gguf")}
            | {"safetensors" for p in repo.files if p.endswith(".safetensors")}
        )
        info: dict[str, Any] = {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": org,
            "sha": repo.commit,
            "lastModified": _iso(repo.last_modified),
            "createdAt": _iso(repo.last_modified),
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": tags,
            "library_name": "gguf" if "gguf" in tags else None,
            "cardData": {"tags": tags},
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(m.size for m in repo.files.values()),
        }
        with self._lock:
            info.update(self._repo_meta.get(repo.repo_id, {}))
        expand = query.get("expand")
        if expand:
            # The Hub returns only the requested properties (plus the ids) with `expand`.
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return info

    def _tree_entries(
        self, repo: _Repo, base: str, recursive: bool, expand: bool
    ) -> list[dict[str, Any]] | None:
        prefix = f"{base}/" if base else ""
        if base and base in repo.files:
            return None  # a file is not a tree
        directories: set[str] = set()
        files: list[FileMeta] = []
        for path, meta in repo.files.items():
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                if not recursive and depth > 1:
                    break
                directories.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                files.append(meta)
        if base and not files and not directories:
            return None
        last_commit = {"id": repo.commit, "title": _COMMIT_TITLE, "date": _iso(repo.last_modified)}
        entries: list[dict[str, Any]] = []
        for directory in sorted(directories):
            tree_oid = hashlib.sha1(
                "".join(
                    f"{p}\0{m.git_oid}\n"
                    for p, m in repo.files.items()
                    if p.startswith(directory + "/")
                ).encode()
            ).hexdigest()
            entry: dict[str, Any] = {
                "type": "directory",
                "oid": tree_oid,
                "size": 0,
                "path": directory,
            }
            if expand:
                entry["lastCommit"] = last_commit
            entries.append(entry)
        for meta in files:
            entry = {"type": "file", "oid": meta.git_oid, "size": meta.size, "path": meta.path}
            if meta.is_lfs:
                entry["lfs"] = {
                    "oid": meta.sha256,
                    "size": meta.size,
                    "pointerSize": meta.pointer_size,
                }
            if expand:
                entry["lastCommit"] = last_commit
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
            entries.append(entry)
        return entries

    # ------------------------------------------------------------------ CLI

    def serve_until_signal(self) -> None:
        """Serve until SIGINT/SIGTERM (foreground CLI mode)."""
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        print(f"HubServer listening on {self.url}", flush=True)
        if self.cdn_url:
            print(f"HubServer CDN on {self.cdn_url}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    server: _HubHTTPServer
    # As a real server's front (nginx's tcp_nodelay, a CDN): the headers and the body go out
    # in two writes, and on a kept-alive connection Nagle held the body until the client's
    # delayed ACK, 40 ms later (measured: huggingface_hub's model_info 44 ms a call, 4 ms on
    # a new connection).
    disable_nagle_algorithm = True

    # -------------------------------------------------------------- plumbing

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are logged through HubServer._log (when verbose) instead of raw stderr lines.
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(
        self,
        status: int,
        headers: Mapping[str, str | int] | None = None,
        body: bytes = b"",
        record: RequestRecord | None = None,
    ) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", len(body))
        for key, value in headers.items():
            self.send_header(key, str(value))
        # Account before the bytes leave: once the client has them, a test may read the log.
        if record is not None:
            record.status = status
            self.hub._log(record)
        self.end_headers()
        if body and self.command != "HEAD":
            self._write(body, record)

    def _write(self, data: bytes, record: RequestRecord | None, file_body: bool = False) -> bool:
        """Write body bytes, counting them first (a test may check as soon as it reads them).

        Return False, uncount the bytes and mark the connection for closing if the write fails.
        """
        if record is not None:
            self.hub._count(record, len(data), file_body)
        try:
            self.wfile.write(data)
        except OSError:
            if record is not None:
                self.hub._count(record, -len(data), file_body)
            self.close_connection = True
            return False
        return True

    def _send_json(
        self,
        status: int,
        payload: Any,
        headers: Mapping[str, str | int] | None = None,
        record: RequestRecord | None = None,
    ) -> None:
        all_headers: dict[str, str | int] = {"Content-Type": "application/json; charset=utf-8"}
        all_headers.update(headers or {})
        self._send(status, all_headers, json.dumps(payload).encode(), record)

    def _send_error(
        self,
        status: int,
        code: str | None,
        message: str,
        record: RequestRecord | None,
        headers: Mapping[str, str | int] | None = None,
    ) -> None:
        all_headers: dict[str, str | int] = {"X-Error-Message": message}
        if code:
            all_headers["X-Error-Code"] = code
        all_headers.update(headers or {})
        self._send_json(status, {"error": message}, all_headers, record)

    # -------------------------------------------------------------- routing

    def _new_record(
        self, url_path: str, kind: str, repo_id: str | None, file: str | None
    ) -> RequestRecord:
        return RequestRecord(
            method=self.command,
            path=url_path,
            kind=kind,
            repo_id=repo_id,
            file=file,
            range=self.headers.get("Range"),
            auth=self.headers.get("Authorization") is not None,
        )

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        raw_segments = split.path.split("/")[1:]
        segments = [unquote(s) for s in raw_segments]
        query = parse_qs(split.query, keep_blank_values=True)
        try:
            if segments[:1] == ["_control"] and not self.server.is_cdn:
                self._control(method, segments[1:])
                return
            if method not in ("GET", "HEAD"):
                self._send_error(405, None, "Method not allowed", None)
                return
            if segments[:1] == ["cdn"] and len(segments) >= 5:
                self._cdn(split.path, segments[1:])
            elif self.server.is_cdn:
                self._send_error(404, None, "Not found", None)
            elif segments[:2] == ["api", "models"] and len(segments) >= 4:
                self._api(split.path, segments[2:], raw_segments[2:], query)
            elif len(segments) >= 5 and segments[2] == "resolve":
                self._resolve(split.path, segments)
            else:
                record = self._new_record(split.path, "other", None, None)
                self._send_error(404, None, "Not found", record)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _check_status_fault(
        self, record: RequestRecord, candidates: list[str], commit: str | None
    ) -> bool:
        """Answer the request with an injected status when a fault says so; return True if so."""
        faults = self.hub._take_faults(self.command, candidates, ("status",))
        if not faults:
            return False
        fault = faults[0]
        record.fault = "status"
        code = int(fault.params["code"])
        headers: dict[str, str | int] = {}
        if commit is not None:
            headers["X-Repo-Commit"] = commit
        retry_after = fault.params.get("retry_after")
        if code == 429 and retry_after is None:
            retry_after = 1
        if retry_after is not None:
            headers["Retry-After"] = int(retry_after)
        error_code: str | None = None
        message = fault.params.get("message")
        if code in (401, 403):
            error_code = "GatedRepo"
            message = message or (
                f"Access to model {record.repo_id} is restricted. You must have access to it and"
                " be authenticated to access it. Please log in."
                if code == 401
                else f"Access to model {record.repo_id} is restricted and you are not in the"
                " authorized list. Visit the repo page to ask for access."
            )
        elif code == 404:
            error_code = "EntryNotFound" if record.file else "RepoNotFound"
            message = message or ("Entry not found" if record.file else "Repository not found")
        elif code == 429:
            message = message or "You have exceeded our rate limit. Please retry later."
        else:
            message = (
                message or "Internal Error - We're working hard to fix this as soon as possible!"
            )
        self._send_error(code, error_code, message, record, headers)
        return True

    def _check_auth(self, record: RequestRecord) -> bool:
        """Answer 401 when a token is required and missing/wrong; return True if answered."""
        if self._check_gate(record):
            return True
        token = self.hub.required_token
        if token is None:
            return False
        auth = self.headers.get("Authorization")
        if auth == f"Bearer {token}":
            return False
        if auth is None:
            self._send_error(
                401,
                "GatedRepo",
                f"Access to model {record.repo_id} is restricted. You must have access to it and"
                " be authenticated to access it. Please log in.",
                record,
            )
        else:
            # The Hub answers a bad token this way (no error code), which the client reports as
            # a plain HfHubHTTPError rather than RepositoryNotFoundError.
            self._send_error(401, None, "Invalid credentials in Authorization header", record)
        return True

    def _check_gate(self, record: RequestRecord) -> bool:
        """Answer a gated repo's request (gate_repo) without the right token; True if answered."""
        with self.hub._lock:
            gate = self.hub._gates.get(record.repo_id or "")
        if gate is None or (record.kind == "api" and not gate[1]):
            return False
        auth = self.headers.get("Authorization")
        if auth == f"Bearer {gate[0]}":
            return False
        if auth is None:
            message = (
                f"Access to model {record.repo_id} is restricted. You must have access to it and"
                " be authenticated to access it. Please log in."
            )
            self._send_error(401, "GatedRepo", message, record)
        else:
            message = (
                f"Access to model {record.repo_id} is restricted and you are not in the"
                " authorized list. Visit the repo page to ask for access."
            )
            self._send_error(403, "GatedRepo", message, record)
        return True

    # -------------------------------------------------------------- API

    def _api(
        self,
        url_path: str,
        segments: list[str],
        raw_segments: list[str],
        query: dict[str, list[str]],
    ) -> None:
        repo_id = f"{segments[0]}/{segments[1]}"
        rest = segments[2:]
        record = self._new_record(url_path, "api", repo_id, None)
        if self._check_status_fault(record, [url_path, repo_id], None):
            return
        if self._check_auth(record):
            return
        repo = self.hub._load_repo(repo_id)
        if repo is None:
            self._send_error(404, "RepoNotFound", "Repository not found", record)
            return
        if not rest or (rest[0] == "revision" and len(rest) == 2):
            revision = rest[1] if rest else "main"
            if revision not in ("main", repo.commit):
                self._send_error(404, "RevisionNotFound", f"Invalid rev id: {revision}", record)
                return
            self._send_json(200, self.hub._model_info(repo, query), record=record)
            return
        if rest[0] == "tree" and len(rest) >= 2:
            revision = rest[1]
            if revision not in ("main", repo.commit):
                self._send_error(404, "RevisionNotFound", f"Invalid rev id: {revision}", record)
                return
            # The client quotes the tree path with safe="" (slashes become %2F), browsers do not:
            # joining the decoded segments handles both.
            base = "/".join(rest[2:]).strip("/")
            self._tree(repo, base, raw_segments, query, record)
            return
        self._send_error(404, None, "Not found", record)

    def _tree(
        self,
        repo: _Repo,
        base: str,
        raw_segments: list[str],
        query: dict[str, list[str]],
        record: RequestRecord,
    ) -> None:
        recursive = _truthy(query.get("recursive"))
        expand = _truthy(query.get("expand"))
        entries = self.hub._tree_entries(repo, base, recursive, expand)
        if entries is None:
            self._send_error(
                404,
                "EntryNotFound",
                f"Entry not found: {base}",
                record,
                {"X-Repo-Commit": repo.commit},
            )
            return
        page_size = EXPANDED_TREE_PAGE_SIZE if expand else self.hub.tree_page_size
        page_size = min(page_size, self.hub.tree_page_size)
        try:
            start = int(query.get("cursor", ["0"])[-1] or 0)
        except ValueError:
            self._send_error(400, None, "Invalid cursor", record)
            return
        page = entries[start : start + page_size]
        headers: dict[str, str | int] = {"X-Repo-Commit": repo.commit}
        if start + page_size < len(entries):
            # The client follows absolute `Link` URLs verbatim; the cursor is opaque to it.
            next_query = urlencode(
                {"recursive": recursive, "expand": expand, "cursor": start + page_size}
            )
            host = self.headers.get("Host") or f"127.0.0.1:{self.hub.port}"
            next_url = f"http://{host}/api/models/{'/'.join(raw_segments)}?{next_query}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(200, page, headers, record)

    # -------------------------------------------------------------- files

    def _resolve(self, url_path: str, segments: list[str]) -> None:
        repo_id = f"{segments[0]}/{segments[1]}"
        revision = segments[3]
        file_path = "/".join(segments[4:])
        record = self._new_record(url_path, "resolve", repo_id, file_path)
        candidates = [file_path, f"{repo_id}/{file_path}", file_path.rsplit("/", 1)[-1], url_path]
        repo = self.hub._load_repo(repo_id)
        commit = repo.commit if repo is not None else None
        if self._check_status_fault(record, candidates, commit):
            return
        if self._check_auth(record):
            return
        if repo is None:
            self._send_error(404, "RepoNotFound", "Repository not found", record)
            return
        if revision not in ("main", repo.commit):
            self._send_error(404, "RevisionNotFound", f"Invalid rev id: {revision}", record)
            return
        meta = repo.files.get(file_path)
        if meta is None:
            self._send_error(
                404, "EntryNotFound", "Entry not found", record, {"X-Repo-Commit": repo.commit}
            )
            return
        hub_headers: dict[str, str | int] = {"X-Repo-Commit": repo.commit}
        if meta.is_lfs:
            hub_headers["X-Linked-Etag"] = f'"{meta.sha256}"'
            hub_headers["X-Linked-Size"] = meta.size
        if meta.is_lfs and self.hub.lfs_redirect is not None:
            cdn_path = f"/cdn/{repo_id}/{repo.commit}/{quote(file_path)}"
            if self.hub.lfs_redirect == "cdn":
                location = f"{self.hub.cdn_url}{cdn_path}"
            else:
                location = cdn_path  # relative, like the Hub's same-origin redirects
            # Like the Hub, the redirect's own ETag is the git oid of the LFS pointer file; the
            # client prefers X-Linked-Etag.
            headers = {**hub_headers, "Location": location, "ETag": f'"{meta.git_oid}"'}
            self._send(302, headers, b"", record)
            return
        self._serve_file(repo, meta, record, candidates, hub_headers)

    def _cdn(self, url_path: str, segments: list[str]) -> None:
        repo_id = f"{segments[0]}/{segments[1]}"
        commit = segments[2]
        file_path = "/".join(segments[3:])
        record = self._new_record(url_path, "cdn", repo_id, file_path)
        candidates = [file_path, f"{repo_id}/{file_path}", file_path.rsplit("/", 1)[-1], url_path]
        if self._check_status_fault(record, candidates, None):
            return
        repo = self.hub._load_repo(repo_id)
        meta = repo.files.get(file_path) if repo is not None and repo.commit == commit else None
        if repo is None or meta is None:
            self._send_error(404, None, "Not found", record)
            return
        extra: dict[str, str | int] = {}
        if not self.server.is_cdn:
            # A same-origin redirect is followed by the client's HEAD, so the landing response
            # must carry the Hub headers like any Hub resolve response.
            extra = {
                "X-Repo-Commit": repo.commit,
                "X-Linked-Etag": f'"{meta.etag}"',
                "X-Linked-Size": meta.size,
            }
        self._serve_file(repo, meta, record, candidates, extra)

    def _serve_file(
        self,
        repo: _Repo,
        meta: FileMeta,
        record: RequestRecord,
        candidates: list[str],
        extra_headers: Mapping[str, str | int],
    ) -> None:
        size = meta.size
        etag = meta.etag
        start, end = 0, size - 1
        status = 200
        range_header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if range_header and if_range is not None and _normalize_etag(if_range) != etag:
            range_header = None  # RFC 9110: a stale validator means "send the whole thing"
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed == "unsatisfiable":
                self._send(
                    416,
                    {**extra_headers, "Content-Range": f"bytes */{size}", "ETag": f'"{etag}"'},
                    b"",
                    record,
                )
                return
            if parsed is not None:
                start, end = parsed
                status = 206
        length = end - start + 1 if size else 0
        name = meta.path.rsplit("/", 1)[-1]
        headers: dict[str, str | int] = {
            **extra_headers,
            "Content-Type": "application/octet-stream",
            "Content-Length": length,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            # The client shows `filename="..."` from this header in its progress bar.
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
            "Last-Modified": datetime.fromtimestamp(repo.last_modified, tz=UTC).strftime(
                "%a, %d %b %Y %H:%M:%S GMT"
            ),
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body_faults = (
            _BodyFaults(
                self.hub._take_faults(
                    "GET", candidates, ("drop_after", "throttle", "corrupt", "stall")
                )
            )
            if self.command == "GET" and length > 0
            else None
        )
        if body_faults is not None and body_faults.names:
            record.fault = ",".join(body_faults.names)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        record.status = status
        self.hub._log(record)
        self.end_headers()
        if body_faults is None:
            return
        self._stream_body(repo.directory / meta.path, start, length, body_faults, record)

    def _stream_body(
        self, path: Path, start: int, length: int, faults: _BodyFaults, record: RequestRecord
    ) -> None:
        stall_at = faults.stall_after if faults.stall else None
        if stall_at == 0:
            time.sleep(faults.stall)
            stall_at = None
        limit = length if faults.drop_bytes is None else min(length, faults.drop_bytes)
        chunk_size = self.hub.chunk_size
        if faults.rate:
            # Small writes keep the pacing smooth at low rates.
            chunk_size = max(1024, min(chunk_size, int(faults.rate) // 20))
        sent = 0
        began = time.monotonic()
        if not faults.names:
            self._sendfile_body(path, start, length, record)
            return
        try:
            with open(path, "rb") as f:
                f.seek(start)
                while sent < limit:
                    if stall_at is not None and sent >= stall_at:
                        time.sleep(faults.stall)  # the connection goes quiet mid-body
                        stall_at = None
                    step = chunk_size if stall_at is None else min(chunk_size, stall_at - sent)
                    chunk = f.read(min(step, limit - sent))
                    if not chunk:
                        break  # the file shrank under us; the client will see a short body
                    if faults.corrupt:
                        chunk = chunk.translate(_FLIP_TABLE)
                    if not self._write(chunk, record, file_body=True):
                        return
                    sent += len(chunk)
                    if faults.rate:
                        delay = sent / faults.rate - (time.monotonic() - began)
                        if delay > 0:
                            time.sleep(delay)
        except OSError:  # the file vanished or became unreadable mid-response
            self.close_connection = True
            return
        if sent < length:
            self._abort_connection(faults.drop_mode)

    def _sendfile_body(self, path: Path, start: int, length: int, record: RequestRecord) -> None:
        """Send an unfaulted body with sendfile(2): the kernel copies it, not this process.

        A real Hub's CPU is not the client's; here the server shares the client's cores, so
        the fewer cycles it takes the more honest a client's figure is (bench/download.py).
        Bytes are counted a step ahead, as `_write` counts them, and uncounted if unsent.
        """
        sent = 0
        try:
            with open(path, "rb") as f:
                while sent < length:
                    step = min(_SENDFILE_STEP, length - sent)
                    self.hub._count(record, step, True)
                    try:
                        n = self.connection.sendfile(f, start + sent, step)
                    except OSError:
                        self.hub._count(record, -step, True)
                        self.close_connection = True
                        return
                    if n < step:
                        self.hub._count(record, n - step, True)
                    sent += n
                    if n == 0:
                        break  # the file shrank under us; the client will see a short body
        except OSError:  # the file vanished or became unreadable mid-response
            self.close_connection = True
            return
        if sent < length:
            self.close_connection = True

    def _abort_connection(self, mode: str) -> None:
        """Close the connection mid-body: FIN (orderly close) or RST (connection reset)."""
        self.close_connection = True
        if mode != "rst":
            # socketserver shuts down the write side (FIN) and closes once the handler returns.
            return
        sock = self.connection
        # With SO_LINGER 0 the kernel discards unsent data, so wait until the client has the
        # bytes already written; otherwise the cut point would depend on scheduling.
        _wait_send_queue_empty(sock)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # `rfile` holds a reference to the socket: the fd (and the RST) is only released
            # once both are closed.
            self.rfile.close()
            sock.close()

    # -------------------------------------------------------------- control

    def _control(self, method: str, segments: list[str]) -> None:
        hub = self.hub
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = segments[0] if segments else ""
        if target == "faults" and method == "GET":
            self._send_json(200, [f.to_json() for f in hub.faults])
        elif target == "faults" and method == "POST":
            try:
                spec = json.loads(body or b"{}")
                pattern = spec.pop("pattern")
                kind = spec.pop("kind")
                if "methods" in spec and spec["methods"] is not None:
                    spec["methods"] = tuple(spec["methods"])
                fault = hub.add_fault(pattern, kind, **spec)
            except (KeyError, TypeError, ValueError) as exc:
                self._send_json(400, {"error": str(exc)})
                return
            self._send_json(200, fault.to_json())
        elif target == "faults" and method == "DELETE":
            if len(segments) > 1:
                hub.remove_fault(int(segments[1]))
            else:
                hub.clear_faults()
            self._send_json(200, {"ok": True})
        elif target == "stats" and method == "GET":
            self._send_json(200, hub.stats())
        elif target == "reset" and method == "POST":
            hub.reset_counters()
            self._send_json(200, {"ok": True})
        elif target == "repos" and method == "GET":
            self._send_json(200, {rid: hub.repo_commit(rid) for rid in hub.repo_ids()})
        else:
            self._send_json(404, {"error": "unknown control endpoint"})


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """Parse a single ``bytes=`` range.

    Return ``(start, end)`` inclusive, ``"unsatisfiable"``, or None when the header should be
    ignored (other units, multiple ranges, bad syntax), as RFC 9110 allows.
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    try:
        if not first:
            if not last:
                return None
            suffix = int(last)
            if suffix <= 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if last and end < start:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _wait_send_queue_empty(sock: socket.socket, timeout: float = 2.0) -> None:
    """Wait until the peer has acknowledged everything written to ``sock`` (best effort)."""
    try:
        import fcntl
        import termios

        outq = termios.TIOCOUTQ  # == SIOCOUTQ on Linux: bytes not yet acked by the peer
    except (ImportError, AttributeError):
        time.sleep(0.05)
        return
    deadline = time.monotonic() + timeout
    buf = bytearray(4)
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(sock.fileno(), outq, buf)
        except OSError:
            return
        if struct.unpack("i", bytes(buf))[0] == 0:
            return
        time.sleep(0.005)


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Fake Hugging Face Hub server for tests.")
    parser.add_argument("--root", required=True, type=Path, help="directory of <org>/<name>/ repos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--lfs-threshold", type=int, default=DEFAULT_LFS_THRESHOLD)
    parser.add_argument("--lfs-redirect", choices=["cdn", "same-host"], default=None)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--tree-page-size", type=int, default=DEFAULT_TREE_PAGE_SIZE)
    parser.add_argument("--no-warm", action="store_true", help="hash files lazily, not at start")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    server = HubServer(
        args.root,
        lfs_threshold=args.lfs_threshold,
        lfs_redirect=args.lfs_redirect,
        required_token=args.token,
        host=args.host,
        port=args.port,
        cdn_port=args.cdn_port,
        tree_page_size=args.tree_page_size,
        verbose=args.verbose,
    )
    if not args.no_warm:
        server.warm()
    server.serve_until_signal()
    return 0


if __name__ == "__main__":
    sys.exit(main())
