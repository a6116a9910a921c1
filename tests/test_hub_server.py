"""Drive tests/hub_server.py with the real huggingface_hub client (no Django needed).

Run alone with ``pytest tests/test_hub_server.py -p no:django --noconftest`` (the package
conftest needs Django), or as part of the normal suite.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.hub_server import HubServer, iter_random_bytes, make_repo, sha256_file

REPO = "acme/tiny"
FILES: dict[str, bytes | int] = {
    "config.json": b'{"model_type": "llama"}\n',
    "README.md": b"# tiny\n",
    "model.safetensors": 200_000,
    "gguf/tiny-Q4_K_M.gguf": 64_000,
    "gguf/nested/extra.bin": 2048,
}
BIG_REPO = "acme/big"
MIB = 1024 * 1024
BIG_SIZE = 12 * MIB  # > the client's 10 MiB read chunk, so a resume point exists
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_repo(root, REPO, FILES)
    make_repo(root, BIG_REPO, {"big.gguf": BIG_SIZE})
    return root


@pytest.fixture
def server(hub_root: Path):
    with HubServer(hub_root) as srv:
        yield srv


@pytest.fixture(scope="module")
def http():
    # One client for the module: building one per call costs ~0.1 s (SSL context).
    with httpx2.Client() as client:
        yield client


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


def src(hub_root: Path, path: str, repo_id: str = REPO) -> Path:
    return hub_root / repo_id / path


def git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def download(server: HubServer, cache_dir: Path, filename: str, repo_id: str = REPO, **kw):
    kw.setdefault("token", False)
    return hf_hub_download(
        repo_id, filename, endpoint=server.url, cache_dir=cache_dir, etag_timeout=5, **kw
    )


def resolve_url(server: HubServer, path: str, repo_id: str = REPO) -> str:
    return hf_hub_url(repo_id, path, endpoint=server.url)


# --------------------------------------------------------------------------- API endpoints


def test_model_info_with_files_metadata(server: HubServer, hub_root: Path) -> None:
    api = HfApi(endpoint=server.url, token=False)
    info = api.model_info(REPO, revision="main", files_metadata=True)

    assert info.id == REPO
    assert info.sha == server.repo_commit(REPO)
    assert info.private is False and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings}
    assert {p: s.size for p, s in siblings.items()} == {
        p: src(hub_root, p).stat().st_size for p in FILES
    }
    lfs = siblings["model.safetensors"].lfs
    assert lfs is not None
    assert lfs.sha256 == sha256_file(src(hub_root, "model.safetensors"))
    assert lfs.size == 200_000
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == git_oid(FILES["config.json"])
    assert server.requests[-1].path == f"/api/models/{REPO}/revision/main"


def test_model_info_without_files_metadata_and_by_commit(server: HubServer) -> None:
    api = HfApi(endpoint=server.url, token=False)
    commit = server.repo_commit(REPO)

    info = api.model_info(REPO, revision=commit)

    assert info.sha == commit
    assert all(s.size is None and s.lfs is None for s in info.siblings)
    assert api.model_info(REPO).sha == commit  # no revision -> /api/models/{repo_id}


def test_model_info_unknown_repo_and_revision(server: HubServer) -> None:
    api = HfApi(endpoint=server.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/missing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="v9")


def test_commit_is_content_derived(hub_root: Path, tmp_path: Path) -> None:
    with HubServer(hub_root) as a, HubServer(hub_root) as b:
        assert a.repo_commit(REPO) == b.repo_commit(REPO)
    make_repo(tmp_path, REPO, FILES)
    with HubServer(tmp_path) as c:
        before = c.repo_commit(REPO)
        assert before == a.repo_commit(REPO)
        make_repo(tmp_path, REPO, {"config.json": b"{}"})
        assert c.repo_commit(REPO) != before


def test_list_repo_tree_recursive(server: HubServer, hub_root: Path) -> None:
    api = HfApi(endpoint=server.url, token=False)

    entries = list(api.list_repo_tree(REPO, revision="main", recursive=True))

    files = {e.path: e for e in entries if isinstance(e, RepoFile)}
    folders = {e.path for e in entries if isinstance(e, RepoFolder)}
    assert set(files) == set(FILES)
    assert folders == {"gguf", "gguf/nested"}
    weights = files["model.safetensors"]
    assert weights.size == 200_000
    assert weights.lfs is not None
    assert weights.lfs.sha256 == sha256_file(src(hub_root, "model.safetensors"))
    assert files["config.json"].lfs is None
    assert files["config.json"].blob_id == git_oid(FILES["config.json"])
    assert all(f.xet_hash is None for f in files.values())


def test_list_repo_tree_levels_and_errors(server: HubServer) -> None:
    api = HfApi(endpoint=server.url, token=False)

    root = {e.path for e in api.list_repo_tree(REPO)}
    sub = {e.path for e in api.list_repo_tree(REPO, path_in_repo="gguf")}
    nested = {e.path for e in api.list_repo_tree(REPO, path_in_repo="gguf/nested")}

    assert root == {"config.json", "README.md", "model.safetensors", "gguf"}
    assert sub == {"gguf/tiny-Q4_K_M.gguf", "gguf/nested"}
    assert nested == {"gguf/nested/extra.bin"}
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(REPO, path_in_repo="nope"))
    with pytest.raises(RevisionNotFoundError):
        list(api.list_repo_tree(REPO, revision="v9"))


def test_list_repo_tree_expand_and_pagination(hub_root: Path) -> None:
    with HubServer(hub_root, tree_page_size=2) as srv:
        api = HfApi(endpoint=srv.url, token=False)

        entries = list(api.list_repo_tree(REPO, recursive=True, expand=True))

        assert len(entries) == len(FILES) + 2  # plus the two folders
        assert {e.last_commit.oid for e in entries} == {srv.repo_commit(REPO)}
        tree_calls = [r for r in srv.requests if "/tree/" in r.path]
        assert len(tree_calls) == 4  # 7 entries, 2 per page, pages chained through Link


# --------------------------------------------------------------------------- resolve


def test_get_hf_file_metadata(server: HubServer, hub_root: Path) -> None:
    commit = server.repo_commit(REPO)

    small = get_hf_file_metadata(
        resolve_url(server, "config.json"), token=False, endpoint=server.url
    )
    lfs = get_hf_file_metadata(
        resolve_url(server, "model.safetensors"), token=False, endpoint=server.url
    )

    assert small.commit_hash == commit
    assert small.etag == git_oid(FILES["config.json"])
    assert small.size == len(FILES["config.json"])
    assert lfs.commit_hash == commit
    assert lfs.etag == sha256_file(src(hub_root, "model.safetensors"))
    assert lfs.size == 200_000
    assert lfs.location == resolve_url(server, "model.safetensors")
    assert lfs.xet_file_data is None
    with pytest.raises(RemoteEntryNotFoundError):
        get_hf_file_metadata(resolve_url(server, "missing.bin"), token=False)


def test_resolve_headers_carry_no_xet_metadata(server: HubServer, http: httpx2.Client) -> None:
    response = http.head(resolve_url(server, "model.safetensors"))

    assert response.status_code == 200
    assert not [h for h in response.headers if h.lower().startswith("x-xet")]
    assert "link" not in response.headers
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["x-linked-size"] == "200000"
    assert response.headers["x-repo-commit"] == server.repo_commit(REPO)


@pytest.mark.parametrize("filename", ["config.json", "model.safetensors", "gguf/tiny-Q4_K_M.gguf"])
def test_hf_hub_download_matches_source(
    server: HubServer, hub_root: Path, cache_dir: Path, filename: str
) -> None:
    path = download(server, cache_dir, filename)

    assert sha256_file(path) == sha256_file(src(hub_root, filename))
    size = src(hub_root, filename).stat().st_size
    assert server.bytes_sent(filename) == size
    assert server.request_count(filename, "HEAD") == 1
    assert server.request_count(filename, "GET") == 1


def test_hf_hub_download_errors(server: HubServer, cache_dir: Path) -> None:
    with pytest.raises(RevisionNotFoundError):
        download(server, cache_dir, "config.json", revision="v9")
    with pytest.raises(RemoteEntryNotFoundError):
        download(server, cache_dir, "missing.bin")
    with pytest.raises(RepositoryNotFoundError):
        download(server, cache_dir, "config.json", repo_id="acme/missing")


def test_snapshot_download_allow_patterns(
    server: HubServer, hub_root: Path, cache_dir: Path
) -> None:
    folder = snapshot_download(
        REPO,
        endpoint=server.url,
        cache_dir=cache_dir,
        token=False,
        allow_patterns=["*.json", "*.gguf"],
    )

    assert Path(folder).name == server.repo_commit(REPO)
    got = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
    assert got == ["config.json", "gguf/tiny-Q4_K_M.gguf"]
    for rel in got:
        assert sha256_file(Path(folder) / rel) == sha256_file(src(hub_root, rel))
    assert {r.file for r in server.requests if r.method == "GET" and r.file} == set(got)


@pytest.mark.parametrize("mode", ["cdn", "same-host"])
def test_lfs_redirect_modes(hub_root: Path, cache_dir: Path, mode: str) -> None:
    with HubServer(hub_root, lfs_redirect=mode, required_token=TOKEN) as srv:
        meta = get_hf_file_metadata(
            resolve_url(srv, "model.safetensors"), token=TOKEN, endpoint=srv.url
        )
        path = download(srv, cache_dir, "model.safetensors", token=TOKEN)

        assert "/cdn/" in meta.location
        assert meta.size == 200_000
        assert sha256_file(path) == sha256_file(src(hub_root, "model.safetensors"))
        heads = srv.requests_for("model.safetensors", "HEAD")
        assert heads[0].status == 302
        (get,) = srv.requests_for("model.safetensors", "GET")
        assert get.kind == "cdn"
        assert get.status == 200
        # Off the Hub origin the client drops the token, as it does for the real CDN.
        assert get.auth is (mode == "same-host")


# --------------------------------------------------------------------------- ranges


def test_range_requests(server: HubServer, hub_root: Path, http: httpx2.Client) -> None:
    data = src(hub_root, "model.safetensors").read_bytes()
    url = resolve_url(server, "model.safetensors")
    etag = sha256_file(src(hub_root, "model.safetensors"))
    size = len(data)

    closed = http.get(url, headers={"Range": "bytes=10-19"})
    open_ended = http.get(url, headers={"Range": f"bytes={size - 5}-"})
    suffix = http.get(url, headers={"Range": "bytes=-7"})
    too_far = http.get(url, headers={"Range": f"bytes={size}-"})
    stale = http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    fresh = http.get(url, headers={"Range": "bytes=0-9", "If-Range": f'"{etag}"'})

    assert closed.status_code == 206
    assert closed.content == data[10:20]
    assert closed.headers["content-range"] == f"bytes 10-19/{size}"
    assert open_ended.status_code == 206 and open_ended.content == data[-5:]
    assert suffix.status_code == 206 and suffix.content == data[-7:]
    assert too_far.status_code == 416
    assert too_far.headers["content-range"] == f"bytes */{size}"
    assert stale.status_code == 200 and stale.content == data
    assert fresh.status_code == 206 and fresh.content == data[:10]
    assert server.ranges_seen("model.safetensors")[:3] == [
        "bytes=10-19",
        f"bytes={size - 5}-",
        "bytes=-7",
    ]
    assert server.bytes_sent("model.safetensors") == 10 + 5 + 7 + size + 10


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("mode", "error"), [("fin", httpx2.RemoteProtocolError), ("rst", httpx2.ReadError)]
)
def test_drop_after_cuts_the_body(
    server: HubServer, mode: str, error: type[Exception], http: httpx2.Client
) -> None:
    server.add_fault("model.safetensors", "drop_after", bytes=50_000, mode=mode)
    received = 0

    with pytest.raises(error), http.stream("GET", resolve_url(server, "model.safetensors")) as r:
        for chunk in r.iter_bytes():
            received += len(chunk)

    assert server.bytes_sent("model.safetensors") == 50_000
    if mode == "fin":
        assert received == 50_000
    else:
        assert received <= 50_000
    ok = http.get(resolve_url(server, "model.safetensors"))  # times=1: next GET is whole
    assert len(ok.content) == 200_000


def test_drop_after_fin_client_resumes_with_range(
    server: HubServer, hub_root: Path, cache_dir: Path
) -> None:
    server.add_fault("big.gguf", "drop_after", bytes=11 * MIB, mode="fin")

    path = download(server, cache_dir, "big.gguf", repo_id=BIG_REPO)

    assert sha256_file(path) == sha256_file(src(hub_root, "big.gguf", BIG_REPO))
    # http_get only counts bytes it has handed to the file, and it reads in
    # DOWNLOAD_CHUNK_SIZE (10 MiB) pieces, so it resumes at the last full chunk.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    assert server.ranges_seen("big.gguf") == [None, f"bytes={chunk}-"]
    assert server.bytes_sent("big.gguf") == 11 * MIB + (BIG_SIZE - chunk)


def test_drop_after_rst_is_not_retried_by_the_client(server: HubServer, cache_dir: Path) -> None:
    # huggingface_hub 2.4.0's http_get retries RemoteProtocolError/timeouts but not ReadError,
    # so a reset mid-body fails the download: callers must retry themselves.
    server.add_fault("model.safetensors", "drop_after", bytes=50_000, mode="rst")

    with pytest.raises(httpx2.ReadError):
        download(server, cache_dir, "model.safetensors")

    assert server.ranges_seen("model.safetensors") == [None]


def test_status_fault_k_times_then_ok(server: HubServer) -> None:
    fault = server.add_fault("config.json", "status", code=500, times=2)
    url = resolve_url(server, "config.json")

    for _ in range(2):
        with pytest.raises(HfHubHTTPError) as info:
            get_hf_file_metadata(url, token=False)
        assert info.value.response.status_code == 500

    assert get_hf_file_metadata(url, token=False).size == len(FILES["config.json"])
    assert fault.fired == 2 and fault.exhausted
    assert [r.status for r in server.requests_for("config.json")] == [500, 500, 200]


def test_status_503_on_head_is_retried_by_hf_hub_download(
    server: HubServer, hub_root: Path, cache_dir: Path
) -> None:
    server.add_fault("config.json", "status", code=503, times=2)

    path = download(server, cache_dir, "config.json")

    assert Path(path).read_bytes() == FILES["config.json"]
    statuses = [(r.method, r.status) for r in server.requests_for("config.json")]
    assert statuses == [("HEAD", 503), ("HEAD", 503), ("HEAD", 200), ("GET", 200)]


def test_status_429_carries_retry_after_and_client_waits(
    server: HubServer, cache_dir: Path, http: httpx2.Client
) -> None:
    server.add_fault("config.json", "status", code=429, retry_after=7)
    head = http.head(resolve_url(server, "config.json"))
    assert head.status_code == 429
    assert head.headers["retry-after"] == "7"

    server.add_fault("config.json", "status", code=429, retry_after=0, methods=["GET"])
    started = time.monotonic()
    path = download(server, cache_dir, "config.json")

    assert Path(path).read_bytes() == FILES["config.json"]
    # The client sleeps Retry-After + 1 s before retrying a 429.
    assert time.monotonic() - started >= 0.9
    assert [r.status for r in server.requests_for("config.json", "GET")] == [429, 200]


@pytest.mark.parametrize("code", [401, 403])
def test_status_401_403_are_gated_repo_errors(server: HubServer, code: int) -> None:
    server.add_fault("config.json", "status", code=code)

    with pytest.raises(GatedRepoError):
        get_hf_file_metadata(resolve_url(server, "config.json"), token=False)


def test_status_404_is_entry_not_found(server: HubServer) -> None:
    server.add_fault("config.json", "status", code=404)

    with pytest.raises(RemoteEntryNotFoundError):
        get_hf_file_metadata(resolve_url(server, "config.json"), token=False)


def test_required_token(server: HubServer, cache_dir: Path) -> None:
    server.required_token = TOKEN
    api = HfApi(endpoint=server.url)

    with pytest.raises(GatedRepoError):
        api.model_info(REPO, token=False)
    with pytest.raises(GatedRepoError):
        download(server, cache_dir, "config.json", token=False)
    with pytest.raises(HfHubHTTPError) as wrong:
        download(server, cache_dir, "config.json", token="wrong")
    assert wrong.value.response.status_code == 401
    assert not isinstance(wrong.value, GatedRepoError)

    assert api.model_info(REPO, token=TOKEN).sha == server.repo_commit(REPO)
    path = download(server, cache_dir, "config.json", token=TOKEN)
    assert Path(path).read_bytes() == FILES["config.json"]


def test_gate_repo_refuses_its_files_not_its_listing(server: HubServer, cache_dir: Path) -> None:
    server.gate_repo(REPO, token=TOKEN)
    api = HfApi(endpoint=server.url)

    info = api.model_info(REPO, token=False)  # the Hub lists a gated repo to anyone
    assert info.gated == "auto"
    with pytest.raises(GatedRepoError) as anonymous:
        download(server, cache_dir, "config.json", token=False)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as other:
        download(server, cache_dir, "config.json", token="someone-else")
    assert other.value.response.status_code == 403
    assert (
        Path(download(server, cache_dir, "config.json", token=TOKEN)).read_bytes()
        == (FILES["config.json"])
    )

    server.gate_repo(REPO, token=TOKEN, api=True)
    with pytest.raises(GatedRepoError):
        api.model_info(REPO, token=False)
    assert api.model_info(REPO, token=TOKEN).sha == server.repo_commit(REPO)

    server.ungate_repo(REPO)
    assert api.model_info(REPO, token=False).gated is False
    get_hf_file_metadata(resolve_url(server, "config.json"), token=False)


def test_corrupt_serves_same_length_wrong_bytes(
    server: HubServer, hub_root: Path, cache_dir: Path
) -> None:
    server.add_fault("model.safetensors", "corrupt")
    expected = sha256_file(src(hub_root, "model.safetensors"))

    # The client checks only the size on the HTTP path, so corruption goes unnoticed.
    bad = download(server, cache_dir, "model.safetensors")
    assert os.path.getsize(bad) == 200_000
    assert sha256_file(bad) != expected

    good = download(server, cache_dir, "model.safetensors", force_download=True)
    assert sha256_file(good) == expected


def test_throttle_paces_the_body(server: HubServer, http: httpx2.Client) -> None:
    server.add_fault("model.safetensors", "throttle", bytes_per_sec=400_000)

    started = time.monotonic()
    response = http.get(resolve_url(server, "model.safetensors"))
    elapsed = time.monotonic() - started

    assert len(response.content) == 200_000
    assert elapsed >= 0.5 * (200_000 / 400_000)
    assert server.bytes_sent("model.safetensors") == 200_000


def test_stall_causes_read_timeout(server: HubServer, http: httpx2.Client) -> None:
    server.add_fault("config.json", "stall", seconds=1.0)
    url = resolve_url(server, "config.json")

    with pytest.raises(httpx2.ReadTimeout):
        http.get(url, timeout=httpx2.Timeout(5.0, read=0.2))

    assert http.get(url, timeout=2.0).content == FILES["config.json"]


def test_stall_after_some_bytes_recurs_at_each_request(server: HubServer, http: httpx2.Client):
    server.add_fault("model.safetensors", "stall", seconds=1.0, after_bytes=50_000, times=2)
    url = resolve_url(server, "model.safetensors")
    received = []
    for offset in (0, 50_000):
        got = bytearray()
        headers = {"Range": f"bytes={offset}-"}
        with (
            pytest.raises(httpx2.ReadTimeout),
            http.stream("GET", url, headers=headers, timeout=httpx2.Timeout(5.0, read=0.3)) as r,
        ):
            for chunk in r.iter_bytes():
                got += chunk
        received.append(len(got))
    assert received == [50_000, 50_000]  # the body went quiet after that many bytes, each time
    # Once the fault is spent the rest of the body arrives.
    rest = http.get(url, headers={"Range": "bytes=100000-"}, timeout=5.0)
    assert rest.status_code == 206 and len(rest.content) == 200_000 - 100_000


def test_fault_globs_unlimited_times_and_clearing(server: HubServer, http: httpx2.Client) -> None:
    fault = server.add_fault("gguf/*", "status", code=500, times=None)
    url = resolve_url(server, "gguf/nested/extra.bin")

    assert [http.head(url).status_code for _ in range(3)] == [500, 500, 500]
    assert http.head(resolve_url(server, "config.json")).status_code == 200
    assert fault.fired == 3 and not fault.exhausted

    server.clear_faults()
    assert http.head(url).status_code == 200
    with pytest.raises(ValueError):
        server.add_fault("x", "explode")
    with pytest.raises(TypeError):
        server.add_fault("x", "drop_after")  # missing bytes=


def test_api_fault_by_url_glob(server: HubServer) -> None:
    server.add_fault("/api/models/*", "status", code=500)

    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=server.url, token=False).model_info(REPO)


# --------------------------------------------------------------------------- accounting


def test_accounting_and_reset(server: HubServer, http: httpx2.Client) -> None:
    url = resolve_url(server, "model.safetensors")
    http.head(url)
    http.get(url)
    http.get(url, headers={"Range": "bytes=100-199"})

    assert server.bytes_sent("model.safetensors") == 200_100
    assert server.bytes_sent(f"{REPO}/model.safetensors") == 200_100
    assert server.request_count("model.safetensors", "HEAD") == 1
    assert server.request_count("model.safetensors", "GET") == 2
    assert server.ranges_seen("model.safetensors") == [None, "bytes=100-199"]
    assert [(r.method, r.status) for r in server.requests] == [
        ("HEAD", 200),
        ("GET", 200),
        ("GET", 206),
    ]

    server.reset_counters()
    assert server.bytes_sent() == 0 and server.requests == []

    server.add_fault("model.safetensors", "status", code=500)
    assert http.get(url).status_code == 500
    (failed,) = server.requests
    assert failed.bytes_sent > 0  # the JSON error body...
    assert server.bytes_sent("model.safetensors") == 0  # ...is not file content


def test_control_endpoints(server: HubServer, http: httpx2.Client) -> None:
    control = f"{server.url}/_control"
    created = http.post(
        f"{control}/faults", json={"pattern": "config.json", "kind": "status", "code": 503}
    )
    assert created.status_code == 200 and created.json()["kind"] == "status"

    assert http.get(resolve_url(server, "config.json")).status_code == 503
    stats = http.get(f"{control}/stats").json()
    assert [r["status"] for r in stats["requests"]] == [503]
    assert http.post(f"{control}/faults", json={"kind": "status"}).status_code == 400

    http.post(f"{control}/faults", json={"pattern": "*", "kind": "status", "code": 500})
    http.delete(f"{control}/faults")
    http.post(f"{control}/reset")
    assert http.get(resolve_url(server, "config.json")).status_code == 200
    assert http.get(f"{control}/faults").json() == []
    assert len(http.get(f"{control}/stats").json()["requests"]) == 1


# --------------------------------------------------------------------------- helpers, CLI


def test_make_repo_is_deterministic_and_streams(tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", "o/r", {"w.bin": 3 * MIB + 5, "t.txt": "hi"}, seed=1)
    b = make_repo(tmp_path / "b", "o/r", {"w.bin": 3 * MIB + 5}, seed=1)
    c = make_repo(tmp_path / "c", "o/r", {"w.bin": 3 * MIB + 5}, seed=2)

    assert (a / "w.bin").stat().st_size == 3 * MIB + 5
    assert (a / "t.txt").read_bytes() == b"hi"
    assert sha256_file(a / "w.bin") == sha256_file(b / "w.bin")
    assert sha256_file(a / "w.bin") != sha256_file(c / "w.bin")
    assert max(len(chunk) for chunk in iter_random_bytes(3 * MIB, seed=0)) == MIB
    with pytest.raises(ValueError):
        make_repo(tmp_path, "no-slash", {})
    with pytest.raises(ValueError):
        make_repo(tmp_path, "o/r", {"../escape": b""})


def test_hf_hub_url_uses_the_endpoint_argument(server: HubServer) -> None:
    # HF_ENDPOINT is read at import: in-process tests pass endpoint= instead.
    assert resolve_url(server, "config.json") == f"{server.url}/{REPO}/resolve/main/config.json"


def test_cli_serves_clients_configured_by_hf_endpoint(
    hub_root: Path, tmp_path: Path, http: httpx2.Client
) -> None:
    script = Path(__file__).with_name("hub_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--root", str(hub_root), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("HubServer listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[-1]
        client = (
            "from huggingface_hub import constants, hf_hub_download\n"
            "print(constants.ENDPOINT)\n"
            f"print(hf_hub_download({REPO!r}, 'config.json', token=False))\n"
        )
        env = {
            **os.environ,
            "HF_ENDPOINT": url,
            "HF_HUB_CACHE": str(tmp_path / "cache"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        env.pop("HF_HUB_OFFLINE", None)
        out = subprocess.run(
            [sys.executable, "-c", client],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()

        assert out[0] == url
        assert Path(out[1]).read_bytes() == FILES["config.json"]
        assert http.get(f"{url}/_control/stats").json()["bytes_sent"] == {
            f"{REPO}/config.json": len(FILES["config.json"])
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_the_hub_sends_without_nagle(server: HubServer) -> None:
    """Headers and body are two writes: with Nagle on, a kept-alive connection's body waited
    for the client's delayed ACK (40 ms a call). The hub's side of each connection says."""
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as client:
        client.sendall(b"GET /api/models/org/model HTTP/1.1\r\nHost: hub\r\n\r\n")
        assert client.recv(64).startswith(b"HTTP/1.1")
        with server._lock:
            connections = list(server._connections)
        assert connections, "the hub holds no connection"
        for conn in connections:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
