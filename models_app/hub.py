"""The Hugging Face Hub (or a mirror) through huggingface_hub: plans, URLs, headers, errors.

Metadata, URLs, auth headers and the HTTP client are the library's; only the byte
transfer (the fetch package) is ours. Nothing above this module knows HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx2
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, get_session

from .errors import AuthError, ModelyardError, NetworkError, NotFound, TimedOut, UpstreamError
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
