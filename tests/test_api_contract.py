"""The OpenAPI spec is the contract: schemathesis against a live daphne on PostgreSQL.

A real daphne process serves the test database; schemathesis (its command line, as a CI
job would run it) reads /api/v1/openapi.json and sends generated requests, valid and
invalid, to every operation, authenticated with a superuser's API token. It must find no
server error, no status the spec does not document, no body that does not match the
spec, no request that fits the spec refused and none that breaks it accepted.

Safe to fuzz: the store is this test's tmp dir; no worker runs, so a queued download,
delete or prune never starts; the hub is a hub test server with no repo (every repo an
inspect or a custom add asks for is 404).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import (
    CollectionFactory,
    InstallationFactory,
    LLMConfigFactory,
    ModelFactory,
    OperationFactory,
)
from tests.hub_cache import write_snapshot
from tests.processes import child_env, free_port, wait_for_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[1]
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",  # every status answered is documented
    "response_schema_conformance",  # and its body fits the documented schema
    "content_type_conformance",
    "positive_data_acceptance",  # a request the spec allows is not refused (4xx but 404/409)
    "negative_data_rejection",  # one it forbids is refused
    "unsupported_method",  # a method a path does not take is a 405
    "ignored_auth",  # without the token, or with a wrong one, nothing is served
)
MAX_EXAMPLES = 60  # per operation and phase: about a minute on two cores
SEED = 10  # fixed: a failure in CI reproduces with the same command


@pytest.fixture(autouse=True)
def postgres_only(db):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the contract is checked on PostgreSQL (it refuses what SQLite stores)")


@pytest.fixture
def catalog(isolated_store):
    """Models of every type, installed or not, with a collection, a config and operations.

    Return the values schemathesis draws a path or body field from half the time, so that
    its requests reach what exists (and not only the 404 of a random key).
    """
    from collections_app.models import Collection, LLMConfig
    from models_app.models import Model, Operation, UnmanagedRepo
    from models_app.services import store_reconcile

    embed = ModelFactory(key="embed", repo_id="acme/embed", type="embedding")
    llm = ModelFactory(key="llm", repo_id="acme/llm", type="llm", allow_patterns=[])
    ModelFactory(key="rerank", repo_id="acme/rerank", type="reranker")
    ModelFactory(key="splade", repo_id="acme/splade", type="splade")
    InstallationFactory(model=embed)
    InstallationFactory(model=llm)
    CollectionFactory(name="docs", embedding_model=embed)
    LLMConfigFactory(name="high", model=llm)
    OperationFactory(model=embed, kind="download", state="succeeded")
    OperationFactory(model=llm, kind="download", state="failed", error_code="ERR_NETWORK")
    write_snapshot(isolated_store, "x/unmanaged", "c" * 40, {"model.safetensors": b"u" * 90})
    store_reconcile()
    keys = [*Model.objects.values_list("key", flat=True), "no-such-model"]
    return {
        "keys": keys,
        "operation_ids": list(Operation.objects.values_list("pk", flat=True)),
        "collection_ids": list(Collection.objects.values_list("pk", flat=True)),
        "repo_ids": list(UnmanagedRepo.objects.values_list("pk", flat=True)),
        "config_names": [*LLMConfig.objects.values_list("name", flat=True), "low"],
    }


BINDINGS = {
    "path.key": "keys",
    "body.model": "keys",
    "body.embedding_model": "keys",
    "body.reranker_model": "keys",
    "body.splade_model": "keys",
    "body.default_embedding_model": "keys",
    "body.default_llm": "keys",
    "body.default_reranker": "keys",
    "query.model": "keys",
    "path.operation_id": "operation_ids",
    "path.collection_id": "collection_ids",
    "path.repo_pk": "repo_ids",
    "path.name": "config_names",
}


def schemathesis_config(values: dict[str, list]) -> str:
    """Return a schemathesis.toml that draws the fields above from the seeded values."""
    lines = ["[dictionaries]"]
    lines += [f"{name} = {{ values = {json.dumps(items)} }}" for name, items in values.items()]
    lines.append("[parameters]")
    lines += [
        f'"{field}" = {{ dictionary = "{name}", probability = 0.5 }}'
        for field, name in BINDINGS.items()
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def empty_hub(tmp_path):
    from tests.hub_server import HubServer

    (tmp_path / "no-repos").mkdir()
    with HubServer(tmp_path / "no-repos") as server:
        yield server


@pytest.fixture
def live_api(settings, catalog, tmp_path, empty_hub):
    """A daphne process on this test's database and store; return its base URL and its log."""
    port = free_port()
    log = tmp_path / "daphne.log"
    # A hub with no repo: no worker runs anyway, and whatever asks the hub gets a 404.
    env = child_env(settings, HF_ENDPOINT=empty_hub.url)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "config.asgi:application"],
            cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_url(f"{base}/api/v1/openapi.json", timeout=60, proc=proc)
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_schemathesis_finds_no_server_error_undocumented_status_or_refused_valid_request(
    live_api, catalog, superuser_token, tmp_path
):
    base, log = live_api
    config = tmp_path / "schemathesis.toml"
    config.write_text(schemathesis_config(catalog))
    run = subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config),
            "run", f"{base}/api/v1/openapi.json",
            "--checks", ",".join(CHECKS),
            "--header", f"Authorization: Bearer {superuser_token}",
            "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
            "--request-timeout", "10", "--workers", "1", "--no-color",
            "--generation-database", "none",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=420,
    )  # fmt: skip
    server_log = log.read_text(errors="replace")
    assert run.returncode == 0, "\n".join(
        [run.stdout[-20_000:], run.stderr[-5_000:], "daphne's log:", server_log[-10_000:]]
    )
