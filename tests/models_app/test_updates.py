"""Update check and update, against the real hub test server and a real store on disk.

The server derives a repo's commit from its files, so rewriting one file of a repo's root
directory makes a new commit; each test has a repo of its own (the session's are shared).
"""

import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from models_app import services
from models_app.engine import operation_run
from models_app.models import Event, Installation, Operation
from tests.factories import ModelFactory
from tests.hub_server import make_repo

pytestmark = pytest.mark.django_db

WEIGHTS = 2 * 1024 * 1024
EXTRA = 1536 * 1024


@pytest.fixture
def repo(hub):
    repo_id = f"acme/update-{uuid.uuid4().hex[:8]}"
    make_repo(
        hub.root, repo_id,
        {"config.json": b'{"hidden_size": 8}', "model.safetensors": WEIGHTS,
         "extra.safetensors": EXTRA, "README.md": b"# first"},
    )  # fmt: skip
    return repo_id


@pytest.fixture
def model(repo):
    return ModelFactory(
        key="update-embed", repo_id=repo, allow_patterns=["*.json", "*.safetensors"]
    )


def run(result):
    assert result.created, result.message
    operation_run(operation_id=result.operation.id)
    return Operation.objects.get(pk=result.operation.id)


def install(model):
    op = run(services.download_start(model=model))
    assert op.state == "succeeded", op.error_message
    return op


def rewrite(hub, repo_id, **files):
    make_repo(hub.root, repo_id, {name.replace("__", "."): v for name, v in files.items()}, seed=7)


def folder(isolated_store, model):
    return isolated_store / ("models--" + model.repo_id.replace("/", "--"))


def test_a_changed_readme_is_no_update(hub, model):
    install(model)
    rewrite(hub, model.repo_id, README__md=b"# second")
    found = services.update_check(model=model)
    assert not found.available and found.files == []
    assert found.hub_commit != found.installed_commit
    inst = Installation.objects.get(model=model)
    assert inst.update_checked_at is not None and inst.update_commit == ""
    assert not Event.objects.filter(kind="update").exists()


def test_a_changed_weights_file_is_an_update_naming_it(hub, model, superuser_client):
    install(model)
    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    found = services.update_check(model=model)
    assert found.available
    assert found.files == [{"path": "model.safetensors", "change": "changed"}]
    inst = Installation.objects.get(model=model)
    assert inst.update_commit == hub.repo_commit(model.repo_id)
    assert inst.update_files == found.files
    assert Event.objects.filter(kind="update", model=model).count() == 1
    services.update_check(model=model)  # the same commit again: no second event
    assert Event.objects.filter(kind="update", model=model).count() == 1

    page = superuser_client.get(reverse("models:card", args=[model.key])).content.decode()
    assert 'data-testid="update-available"' in page and 'data-testid="update"' in page


def test_an_added_file_among_the_patterns_is_an_update(hub, model):
    install(model)
    rewrite(hub, model.repo_id, tokenizer__json=b'{"v": 2}')
    found = services.update_check(model=model)
    assert found.files == [{"path": "tokenizer.json", "change": "added"}]


def test_an_entry_pinned_to_a_commit_never_asks_the_hub(hub, model):
    install(model)
    commit = Installation.objects.get(model=model).commit_hash
    model.revision = commit
    model.save()
    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    hub.reset_counters()
    found = services.update_check(model=model)
    assert not found.available and found.hub_commit is None and "pinned" in found.reason
    assert hub.requests == []
    result = services.update_start(model=model)
    assert result.operation is None and result.status == "pinned"


def test_a_local_import_never_asks_the_hub_nor_is_scheduled(hub, model, settings):
    install(model)
    model.source = "local"  # as an import leaves it: its repo exists on no Hub
    model.save()
    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    hub.reset_counters()
    found = services.update_check(model=model)
    assert not found.available and found.hub_commit is None
    assert found.reason == "imported from disk: there is no Hub repo to ask"
    result = services.update_start(model=model)
    assert result.operation is None and result.status == "local"
    settings.UPDATE_CHECK_INTERVAL = 3600
    later = timezone.now() + timedelta(hours=2)
    assert services.update_checks_due(now=later) == {"checked": 0, "available": 0, "failed": 0}
    assert hub.requests == []


def test_update_fetches_only_the_changed_blob_and_switches_the_snapshot(hub, model, isolated_store):
    first = install(model)
    base = folder(isolated_store, model)
    old_snapshot = base / "snapshots" / first.commit_hash
    old_weights = (old_snapshot / "model.safetensors").resolve()
    kept = (old_snapshot / "extra.safetensors").resolve()
    kept_inode = kept.stat().st_ino
    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    new_commit = hub.repo_commit(model.repo_id)
    services.update_check(model=model)
    hub.reset_counters()

    op = run(services.update_start(model=model))
    assert op.state == "succeeded", op.error_message
    gets = {r.file for r in hub.requests if r.method == "GET" and r.file}
    assert gets == {"model.safetensors"}
    assert hub.bytes_sent("model.safetensors") == WEIGHTS
    assert hub.bytes_sent() == WEIGHTS
    assert op.result["changed"] == [{"path": "model.safetensors", "change": "changed"}]

    assert (base / "refs" / "main").read_text() == new_commit
    assert not old_snapshot.exists()
    assert not old_weights.exists()  # nothing points at it any more
    new_snapshot = base / "snapshots" / new_commit
    assert (new_snapshot / "extra.safetensors").resolve().stat().st_ino == kept_inode
    assert hub.file_meta(model.repo_id, "model.safetensors").sha256 == (
        (new_snapshot / "model.safetensors").resolve().name
    )
    inst = Installation.objects.get(model=model)
    assert inst.commit_hash == new_commit
    assert (inst.update_commit, inst.update_files) == ("", [])
    assert not list(base.rglob("*.tmp")) and not list(base.rglob("*.incomplete*"))
    again = run(services.verify_start(model=model))
    assert again.state == "succeeded", again.error_message


def test_update_when_up_to_date_changes_nothing(hub, model, isolated_store):
    first = install(model)
    hub.reset_counters()
    op = run(services.update_start(model=model))
    assert op.state == "succeeded" and op.result["note"] == "up to date"
    assert hub.bytes_sent() == 0
    assert (folder(isolated_store, model) / "snapshots" / first.commit_hash).is_dir()


def test_the_scheduled_check_records_one_event_per_new_commit(hub, model, settings):
    install(model)
    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    settings.UPDATE_CHECK_INTERVAL = 3600
    from models_app.tasks import update_check

    assert update_check() == {"checked": 1, "available": 1, "failed": 0}
    assert update_check()["checked"] == 0  # checked within the interval: not due
    later = timezone.now() + timedelta(hours=2)
    assert services.update_checks_due(now=later)["checked"] == 1
    assert Event.objects.filter(kind="update", model=model).count() == 1
    settings.UPDATE_CHECK_INTERVAL = 0
    assert services.update_checks_due(now=later + timedelta(days=30))["checked"] == 0


def test_the_schedule_exists():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="modelyard-update-check")
    assert schedule.func == "models_app.tasks.update_check"


# --- the API and the command ------------------------------------------------------------


def test_api_update_check_then_update(hub, model, token_client):
    install(model)
    response = token_client.post(f"/api/v1/models/{model.key}/update-check")
    assert response.status_code == 200, response.content
    assert response.json()["available"] is False
    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    body = token_client.post(f"/api/v1/models/{model.key}/update-check").json()
    assert body["available"] and body["files"][0]["path"] == "model.safetensors"
    detail = token_client.get(f"/api/v1/models/{model.key}").json()
    assert detail["installation"]["update_commit"] == body["hub_commit"]
    assert detail["installation"]["update_files"] == body["files"]

    response = token_client.post(f"/api/v1/models/{model.key}/update")
    assert response.status_code == 202, response.content
    assert operation_run(operation_id=response.json()["operation"]["id"]) == "succeeded"
    detail = token_client.get(f"/api/v1/models/{model.key}").json()
    assert detail["installation"]["commit_hash"] == body["hub_commit"]
    assert detail["installation"]["update_commit"] == ""


def test_api_refuses_an_entry_that_is_not_installed(model, token_client):
    for action in ("update", "update-check"):
        response = token_client.post(f"/api/v1/models/{model.key}/{action}")
        assert response.status_code == 409, action
        assert response.json()["code"] == "ERR_NOT_INSTALLED"


def test_commands_update_check_and_update(hub, model, capsys):
    install(model)
    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    call_command("models", "update-check")
    assert f"{model.key}: update available" in capsys.readouterr().out
    call_command("models", "update", model.key)
    out = capsys.readouterr().out
    assert "Updated to" in out and "model.safetensors" in out
    call_command("models", "update-check", model.key)
    assert f"{model.key}: no update (up to date)" in capsys.readouterr().out


def test_updating_one_entry_of_a_shared_repo_keeps_the_other_entrys_files(hub, isolated_store):
    repo_id = f"acme/update-gguf-{uuid.uuid4().hex[:8]}"
    make_repo(hub.root, repo_id, {"a.gguf": 64 * 1024, "b.gguf": 96 * 1024})
    a = ModelFactory(key="upd-a", repo_id=repo_id, type="llm", gguf_file="a.gguf")
    b = ModelFactory(key="upd-b", repo_id=repo_id, type="llm", gguf_file="b.gguf")
    install(a)
    old = install(b).commit_hash
    b_blob = (folder(isolated_store, b) / "snapshots" / old / "b.gguf").resolve()
    rewrite(hub, repo_id, a__gguf=64 * 1024)
    assert services.update_check(model=b).available is False  # b.gguf did not change
    assert services.update_check(model=a).available
    op = run(services.update_start(model=a))
    assert op.state == "succeeded", op.error_message
    assert hub.bytes_sent("b.gguf") == 96 * 1024  # its one download, nothing more
    assert Installation.objects.get(model=a).commit_hash == hub.repo_commit(repo_id)
    assert Installation.objects.get(model=b).commit_hash == old  # still where it was
    assert b_blob.exists()
    assert not (folder(isolated_store, a) / "snapshots" / old / "a.gguf").exists()


# --- the page's Check for updates --------------------------------------------------------


def test_page_check_for_updates_answers_the_card_with_the_badge(hub, model, superuser_client):
    install(model)
    url = reverse("models:update_check", args=[model.key])
    card = superuser_client.get(reverse("models:card", args=[model.key])).content.decode()
    assert f'hx-post="{url}"' in card and 'data-testid="update-available"' not in card

    response = superuser_client.post(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert 'data-testid="update-available"' not in response.content.decode()
    assert "no update (up to date)" in response["HX-Trigger"]

    rewrite(hub, model.repo_id, model__safetensors=WEIGHTS)
    response = superuser_client.post(url, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="model-{model.key}"' in html
    assert 'data-testid="update-available"' in html and 'data-testid="update"' in html
    assert "Update available for" in response["HX-Trigger"]
    inst = Installation.objects.get(model=model)
    assert inst.update_commit == hub.repo_commit(model.repo_id)
    assert Event.objects.filter(kind="update", model=model).count() == 1


def test_page_check_for_updates_shows_the_hub_error_in_the_card(hub, model, superuser_client):
    import shutil

    install(model)
    shutil.rmtree(hub.root / model.repo_id)  # the repo is gone from the Hub
    response = superuser_client.post(
        reverse("models:update_check", args=[model.key]), HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 404
    assert response["X-Modelyard-Error"] == "ERR_NOT_FOUND"
    assert 'data-testid="error-code">ERR_NOT_FOUND' in html and f'id="model-{model.key}"' in html
    assert Installation.objects.get(model=model).update_checked_at is None


def test_page_check_for_updates_without_htmx_and_refusals(
    hub, model, superuser_client, user_client, client
):
    url = reverse("models:update_check", args=[model.key])
    response = superuser_client.post(url)  # not installed: back to the page with the error
    assert response.status_code == 302
    page = superuser_client.get(response["Location"]).content.decode()
    assert "ERR_NOT_INSTALLED" in page
    install(model)
    response = superuser_client.post(url)
    assert response.status_code == 302
    assert "no update" in superuser_client.get(response["Location"]).content.decode()
    assert superuser_client.get(url).status_code == 405
    assert client.post(url).status_code == 302  # anonymous: to the login
    assert user_client.post(url).status_code == 403
