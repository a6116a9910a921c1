"""The Hugging Face Hub (or a mirror) through huggingface_hub: plans, URLs, headers, errors.

Metadata, URLs, auth headers and the HTTP client are the library's; only the byte
transfer (the fetch package) is ours. Nothing above this module knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from .errors import (
    AuthError,
    FormatError,
    ModelyardError,
    NetworkError,
    NotFound,
    TimedOut,
    UpstreamError,
)
from .gguf import GGUFHeader, gguf_header_read
from .store import path_matches


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int
    blob_id: str  # the name of the blob in the cache: LFS sha256, or the git blob id
    sha256: str | None
    git_oid: str | None
    url: str

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "size": self.size,
            "blob_id": self.blob_id,
            "sha256": self.sha256,
            "git_oid": self.git_oid,
        }


@dataclass(frozen=True)
class DownloadPlan:
    repo_id: str
    revision: str
    commit_hash: str
    files: list[PlannedFile]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def hub_error(exc: Exception, *, what: str) -> ModelyardError:
    """Map a huggingface_hub or HTTP failure to our error with a message a person can act on."""
    if isinstance(exc, ModelyardError):
        return exc
    if isinstance(exc, GatedRepoError):
        return AuthError(
            f"{what}: the repo is gated. Accept its terms on the Hub and set HF_TOKEN "
            "to a token of that account."
        )
    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError | EntryNotFoundError):
        return NotFound(f"{what}: not found on the Hub ({type(exc).__name__}).")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            return AuthError(
                f"{what}: the Hub refused access (HTTP {status}); check HF_TOKEN, "
                "or accept the repo's terms if it is gated."
            )
        if status == 404:
            return NotFound(f"{what}: not found on the Hub (HTTP 404).")
        return UpstreamError(f"{what}: the Hub answered HTTP {status}.")
    if isinstance(exc, httpx2.TimeoutException):
        return TimedOut(f"{what}: the Hub did not answer in time.")
    if isinstance(exc, httpx2.TransportError):
        return NetworkError(f"{what}: cannot reach the Hub ({type(exc).__name__}).")
    raise exc


TRANSIENT = (NetworkError, TimedOut, UpstreamError)


def plan_download(
    *, repo_id: str, revision: str, patterns: list[str], endpoint: str, token: str | None
) -> DownloadPlan:
    """Resolve the revision to a commit and list the files to fetch with sizes and checksums."""
    api = HfApi(endpoint=endpoint, token=token)
    what = f"{repo_id}@{revision}"
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise hub_error(exc, what=what) from exc
    if not info.sha:
        raise UpstreamError(f"{what}: the Hub did not name the commit of this revision.")
    files = []
    for sibling in info.siblings or []:
        if not path_matches(sibling.rfilename, patterns):
            continue
        lfs = sibling.lfs
        size = lfs.size if lfs else sibling.size
        if size is None:
            raise UpstreamError(f"{what}: the Hub gave no size for {sibling.rfilename}.")
        sha256 = lfs.sha256 if lfs else None
        git_oid = None if lfs else sibling.blob_id
        blob_id = sha256 or git_oid
        if not blob_id:
            raise UpstreamError(f"{what}: the Hub gave no checksum for {sibling.rfilename}.")
        files.append(
            PlannedFile(
                path=sibling.rfilename,
                size=size,
                blob_id=blob_id,
                sha256=sha256,
                git_oid=git_oid,
                url=hf_hub_url(repo_id, sibling.rfilename, revision=info.sha, endpoint=endpoint),
            )
        )
    exact = [p for p in patterns if not any(ch in p for ch in "*?[") and not p.endswith("/")]
    missing = [p for p in exact if p not in {f.path for f in files}]
    if missing:
        raise NotFound(f"{what}: the repo has no file {missing[0]}.")
    if not files:
        raise NotFound(f"{what}: no file of the repo matches {patterns}.")
    return DownloadPlan(repo_id=repo_id, revision=revision, commit_hash=info.sha, files=files)


def request_headers(*, token: str | None) -> dict[str, str]:
    """Return the library's headers for a file request (user agent, auth)."""
    return build_hf_headers(token=token)


def http_session() -> httpx2.Client:
    """Return huggingface_hub's shared HTTP client (its proxy and TLS settings)."""
    return get_session()


# --- a repo's listing, and a remote GGUF header by Range requests (custom entries) -------

RANGE_FIRST_WINDOW = 256 * 1024
RANGE_CAP = 16 * 1024**2  # a GGUF header past this is refused: the design says a few MB


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int | None
    sha256: str | None  # the LFS digest, when the file is an LFS file


@dataclass(frozen=True)
class RepoListing:
    repo_id: str
    revision: str
    commit_hash: str
    pipeline_tag: str | None
    library_name: str | None
    tags: list[str]
    gated: str | bool
    files: list[RepoFile]


def repo_listing(*, repo_id: str, revision: str, endpoint: str, token: str | None) -> RepoListing:
    """Return a repo's commit, pipeline tag and files with sizes; check a gated repo's access.

    The Hub lists a gated repo to anyone and refuses only its files: one HEAD of a file
    tells whether this token may download them (ERR_AUTH, saying what to do, if not).
    """
    api = HfApi(endpoint=endpoint, token=token)
    what = f"{repo_id}@{revision}"
    try:
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:
        raise hub_error(exc, what=what) from exc
    if not info.sha:
        raise UpstreamError(f"{what}: the Hub did not name the commit of this revision.")
    files = [
        RepoFile(
            path=s.rfilename,
            size=s.lfs.size if s.lfs else s.size,
            sha256=s.lfs.sha256 if s.lfs else None,
        )
        for s in info.siblings or []
    ]
    if info.gated and files:
        probe = min(files, key=lambda f: f.size or 0)
        url = hf_hub_url(repo_id, probe.path, revision=info.sha, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, token=token, endpoint=endpoint)
        except Exception as exc:
            raise hub_error(exc, what=what) from exc
    return RepoListing(
        repo_id=repo_id,
        revision=revision,
        commit_hash=info.sha,
        pipeline_tag=info.pipeline_tag,
        library_name=info.library_name,
        tags=list(info.tags or []),
        gated=info.gated or False,
        files=files,
    )


class RangeReader:
    """The start of a remote file as a `read(n)` stream, fetched by HTTP Range requests.

    Windows grow (256 KiB, then doubling), so a small header costs one request and a large
    vocabulary a few; nothing at or past `cap` bytes is ever asked for. `fetched` and
    `requests` say what it cost.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        session: httpx2.Client,
        what: str,
        cap: int = RANGE_CAP,
        first_window: int = RANGE_FIRST_WINDOW,
        timeout: float = 30.0,
    ):
        self.url, self.what, self.cap, self.timeout = url, what, cap, timeout
        self._headers, self._session = headers, session
        self._window = first_window
        self._buf = bytearray()
        self.fetched = 0
        self.requests = 0
        self.size: int | None = None  # the file's size, once a response told it

    def read(self, n: int = -1) -> bytes:
        if not self._buf:
            self._fetch()
        n = len(self._buf) if n < 0 else n
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _fetch(self) -> None:
        if self.size is not None and self.fetched >= self.size:
            return  # the end of the file: read() answers b""
        if self.fetched >= self.cap:
            raise FormatError(
                f"{self.what}: the GGUF header is larger than {self.cap:,} bytes; it is not "
                "read from the Hub (download the file to read it).",
                details={"limit": self.cap},
            )
        end = min(self.fetched + self._window, self.cap) - 1
        want = end - self.fetched + 1
        headers = {
            **self._headers,
            "Range": f"bytes={self.fetched}-{end}",
            "Accept-Encoding": "identity",
        }
        try:
            with self._session.stream(
                "GET", self.url, headers=headers, timeout=self.timeout, follow_redirects=True
            ) as response:
                self.requests += 1
                if response.status_code == 416:
                    self.size = self.fetched
                    return
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                self._check_start(response)
                for chunk in response.iter_bytes():
                    self._buf += chunk
                    if len(self._buf) >= want:
                        break  # a server that ignored the range: stop at the window
        except Exception as exc:
            raise hub_error(exc, what=self.what) from exc
        del self._buf[want:]
        self.fetched += len(self._buf)
        self._window *= 2

    def _check_start(self, response: httpx2.Response) -> None:
        if response.status_code == 206:
            unit, _, rest = response.headers.get("Content-Range", "").partition(" ")
            span, _, total = rest.partition("/")
            if unit.lower() != "bytes" or span.partition("-")[0] != str(self.fetched):
                raise UpstreamError(f"{self.what}: the Hub answered another range ({rest}).")
            self.size = int(total) if total.isdigit() else None
        elif self.fetched:
            raise UpstreamError(f"{self.what}: the Hub does not answer Range requests.")


def gguf_header_remote(
    *,
    repo_id: str,
    commit: str,
    filename: str,
    endpoint: str,
    token: str | None,
    cap: int = RANGE_CAP,
) -> tuple[GGUFHeader, RangeReader]:
    """Read a GGUF file's header on the Hub by Range requests; return it and the reader.

    Raise FormatError when the file is no GGUF or its header is larger than `cap`.
    """
    url = hf_hub_url(repo_id, filename, revision=commit, endpoint=endpoint)
    what = f"{repo_id}/{filename}"
    reader = RangeReader(
        url, headers=request_headers(token=token), session=http_session(), what=what, cap=cap
    )
    try:
        header = gguf_header_read(reader, limit=cap)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc.message}", details=exc.details) from None
    return header, reader
