"""Verify and repair, against the real hub test server and a real store on disk."""

import uuid

import pytest
from django.core.management import call_command
from django.urls import reverse

from models_app import services
from models_app.engine import operation_run
from models_app.errors import NotInstalled
from models_app.models import Event, Installation, Operation
from models_app.runtime.vocab import vocab_load_check
from tests.factories import ModelFactory
from tests.gguf_files import llama_metadata, write_gguf
from tests.hub_server import make_repo

pytestmark = pytest.mark.django_db

WEIGHTS = 2 * 1024 * 1024


@pytest.fixture
def embed_repo(hub):
    """A repo of its own (the session's repos are shared): two small files and one LFS file."""
    repo_id = f"acme/verify-{uuid.uuid4().hex[:8]}"
    make_repo(
        hub.root, repo_id,
        {"config.json": b'{"hidden_size": 8}', "tokenizer.json": b'{"v": 1}',
         "model.safetensors": WEIGHTS, "README.md": b"# not used"},
    )  # fmt: skip
    return repo_id


@pytest.fixture
def embed(embed_repo):
    return ModelFactory(
        key="verify-embed", repo_id=embed_repo, allow_patterns=["*.json", "*.safetensors"]
    )


@pytest.fixture
def gguf(hub):
    repo_id = f"acme/verify-gguf-{uuid.uuid4().hex[:8]}"
    repo_dir = make_repo(hub.root, repo_id, {})
    write_gguf(repo_dir / "tiny.gguf", metadata=llama_metadata())
    return ModelFactory(
        key="verify-gguf", repo_id=repo_id, type="llm", gguf_file="tiny.gguf", allow_patterns=[]
    )


def run(result):
    assert result.created, result.message
    operation_run(operation_id=result.operation.id)
    return Operation.objects.get(pk=result.operation.id)


def install(model):
    op = run(services.download_start(model=model))
    assert op.state == "succeeded", op.error_message
    return op


def blob_of(isolated_store, model, path):
    inst = Installation.objects.get(model=model)
    folder = "models--" + model.repo_id.replace("/", "--")
    link = isolated_store / folder / "snapshots" / inst.commit_hash / path
    return link.resolve()


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_verify_passes_on_a_fresh_download(hub, embed):
    install(embed)
    Installation.objects.filter(model=embed).update(verified_at=None)
    hub.reset_counters()
    op = run(services.verify_start(model=embed))
    assert op.state == "succeeded", op.error_message
    assert hub.requests == []  # no network
    inst = Installation.objects.get(model=embed)
    assert inst.verified_at is not None and inst.damaged_files == []
    names = [c["name"] for c in inst.verify_checks]
    assert names == ["file integrity", "memory fit"]
    assert all(c["passed"] for c in inst.verify_checks)
    assert "3 files" in inst.verify_checks[0]["message"]
    assert op.result["checks"] == inst.verify_checks
    assert op.bytes_done == op.bytes_total >= WEIGHTS
    assert Event.objects.filter(model=embed, kind="verified").count() == 1


def test_verify_of_a_gguf_parses_its_header_and_test_loads_the_vocabulary(hub, gguf):
    install(gguf)
    op = run(services.verify_start(model=gguf, load=True))
    assert op.state == "succeeded", op.error_message
    checks = {c["name"]: c for c in op.result["checks"]}
    assert list(checks) == ["file integrity", "model format", "memory fit", "vocabulary load"]
    assert checks["model format"]["message"].startswith("GGUF v3, llama, 6 tensors")
    assert checks["memory fit"]["passed"] and "needs about" in checks["memory fit"]["message"]
    vocab = checks["vocabulary load"]
    assert vocab["passed"]
    assert vocab["message"] == "vocabulary of 100 tokens loaded" or vocab["message"].startswith(
        "skipped: llama_cpp is not importable"
    )


def test_vocabulary_load_of_a_file_that_is_no_gguf_fails_in_its_child(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    outcome = vocab_load_check(bad, timeout=60)
    if outcome.skipped:
        pytest.skip(outcome.message)
    assert not outcome.ok and outcome.message


def test_a_flipped_byte_fails_with_err_checksum_and_damages_the_model(
    hub, embed, isolated_store, superuser_client
):
    install(embed)
    flip_byte(blob_of(isolated_store, embed, "model.safetensors"), WEIGHTS // 2)
    op = run(services.verify_start(model=embed))
    assert (op.state, op.error_code) == ("failed", "ERR_CHECKSUM")
    assert "model.safetensors" in op.error_message
    assert str(isolated_store) not in op.error_message
    inst = Installation.objects.get(model=embed)
    assert inst.damaged_files == ["model.safetensors"]
    assert inst.verified_at is None
    integrity = inst.verify_checks[0]
    assert integrity["name"] == "file integrity" and not integrity["passed"]
    assert "sha256" in integrity["message"]
    assert op.result["damaged_files"] == ["model.safetensors"]
    damaged = Event.objects.get(model=embed, kind="damaged")
    assert damaged.data["files"] == ["model.safetensors"]

    # A reconcile rewrites the installation: the verify's findings stay.
    services.store_reconcile()
    assert Installation.objects.get(model=embed).damaged_files == ["model.safetensors"]

    page = superuser_client.get(reverse("models:card", args=[embed.key])).content.decode()
    assert 'data-testid="damaged"' in page
    assert 'data-testid="repair"' in page


def test_a_flipped_git_blob_is_caught_too(hub, embed, isolated_store):
    install(embed)
    flip_byte(blob_of(isolated_store, embed, "config.json"), 2)
    op = run(services.verify_start(model=embed))
    assert op.error_code == "ERR_CHECKSUM"
    assert Installation.objects.get(model=embed).damaged_files == ["config.json"]
    assert "git blob id" in op.error_message


def test_repair_fetches_only_the_damaged_blob_then_verify_passes(hub, embed, isolated_store):
    install(embed)
    blob = blob_of(isolated_store, embed, "model.safetensors")
    flip_byte(blob, 10)
    run(services.verify_start(model=embed))
    hub.reset_counters()
    op = run(services.repair_start(model=embed))
    assert op.state == "succeeded", op.error_message
    gets = {r.file for r in hub.requests if r.method == "GET" and r.file}
    assert gets == {"model.safetensors"}
    assert hub.bytes_sent("model.safetensors") == WEIGHTS
    assert hub.bytes_sent("config.json") == hub.bytes_sent("tokenizer.json") == 0
    assert op.result["repaired"] == ["model.safetensors"]
    inst = Installation.objects.get(model=embed)
    assert inst.damaged_files == [] and inst.verified_at is not None
    again = run(services.verify_start(model=embed))
    assert again.state == "succeeded", again.error_message


def test_repair_without_damage_has_nothing_to_do(hub, embed):
    install(embed)
    result = services.repair_start(model=embed)
    assert result.operation is None and result.status == "not_damaged"


def test_verify_of_a_model_that_is_not_installed_is_refused(embed):
    with pytest.raises(NotInstalled):
        services.verify_start(model=embed)
    with pytest.raises(NotInstalled):
        services.repair_start(model=embed)
    assert not Operation.objects.exists()


def test_cancel_between_chunks_records_nothing(hub, embed, settings):
    install(embed)
    settings.OPERATION_PROGRESS_INTERVAL = 0
    result = services.verify_start(model=embed)
    Operation.objects.filter(pk=result.operation.pk).update(cancel_requested=True)
    operation_run(operation_id=result.operation.id)
    op = Operation.objects.get(pk=result.operation.pk)
    assert (op.state, op.error_code) == ("cancelled", "ERR_CANCELLED")
    assert Installation.objects.get(model=embed).verify_checks == []


# --- the API and the command ------------------------------------------------------------


def test_api_verify_and_repair(hub, embed, isolated_store, token_client):
    install(embed)
    url = f"/api/v1/models/{embed.key}/verify"
    response = token_client.post(url, {"load": True}, content_type="application/json")
    assert response.status_code == 202, response.content
    op_id = response.json()["operation"]["id"]
    assert Operation.objects.get(pk=op_id).plan == {"load": True}
    assert operation_run(operation_id=op_id) == "succeeded"
    detail = token_client.get(f"/api/v1/models/{embed.key}").json()
    assert detail["installation"]["damaged_files"] == []
    assert [c["passed"] for c in detail["installation"]["verify_checks"]] == [True] * 3

    flip_byte(blob_of(isolated_store, embed, "model.safetensors"), 0)
    response = token_client.post(url)  # no body: load is false
    assert response.status_code == 202
    assert operation_run(operation_id=response.json()["operation"]["id"]) == "failed"
    response = token_client.post(f"/api/v1/models/{embed.key}/repair")
    assert response.status_code == 202, response.content
    assert operation_run(operation_id=response.json()["operation"]["id"]) == "succeeded"


def test_api_refuses_a_model_that_is_not_installed(embed, token_client):
    for action in ("verify", "repair"):
        response = token_client.post(f"/api/v1/models/{embed.key}/{action}")
        assert response.status_code == 409
        assert response.json()["code"] == "ERR_NOT_INSTALLED"


def test_api_refuses_a_bad_body(embed, token_client):
    response = token_client.post(
        f"/api/v1/models/{embed.key}/verify", {"load": "yes"}, content_type="application/json"
    )
    assert response.status_code == 422


def test_command_prints_each_check(hub, embed, isolated_store, capsys):
    install(embed)
    call_command("models", "verify", embed.key)
    out = capsys.readouterr().out
    assert "✓ file integrity: 3 files" in out
    assert "✓ memory fit" in out
    flip_byte(blob_of(isolated_store, embed, "tokenizer.json"), 1)
    with pytest.raises(SystemExit) as info:
        call_command("models", "verify", embed.key)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert "✗ file integrity: tokenizer.json" in captured.out
    assert "ERR_CHECKSUM" in captured.err


# --- the page and the admin -------------------------------------------------------------

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_page_verify_then_repair(hub, embed, isolated_store, superuser_client):
    install(embed)
    card = superuser_client.get(reverse("models:card", args=[embed.key])).content.decode()
    assert 'data-testid="verify"' in card and 'data-testid="repair"' not in card
    flip_byte(blob_of(isolated_store, embed, "model.safetensors"), 5)
    response = superuser_client.post(reverse("models:verify", args=[embed.key]), **HTMX)
    assert response.status_code == 200
    assert "Verify queued" in response.content.decode()
    op = Operation.objects.get(model=embed, kind="verify")
    operation_run(operation_id=op.id)
    card = superuser_client.get(reverse("models:card", args=[embed.key])).content.decode()
    assert "Damaged: model.safetensors" in card and "ERR_CHECKSUM" in card
    response = superuser_client.post(reverse("models:repair", args=[embed.key]), **HTMX)
    assert response.status_code == 200
    op = Operation.objects.get(model=embed, kind="repair")
    assert operation_run(operation_id=op.id) == "succeeded"
    card = superuser_client.get(reverse("models:card", args=[embed.key])).content.decode()
    assert 'data-testid="damaged"' not in card


def test_page_verify_of_a_model_that_is_not_installed_shows_the_error(embed, superuser_client):
    response = superuser_client.post(reverse("models:verify", args=[embed.key]), **HTMX)
    assert response.status_code == 409
    assert "ERR_NOT_INSTALLED" in response.content.decode()


def test_admin_verify_action(hub, embed, superuser_client):
    install(embed)
    response = superuser_client.post(
        reverse("admin:models_app_model_changelist"),
        {"action": "verify_selected", "_selected_action": [embed.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert Operation.objects.filter(model=embed, kind="verify", state="queued").exists()
    assert "Verify of" in response.content.decode()
