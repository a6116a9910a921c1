"""One operation per model, whatever its kind and state, on every interface; and a download's
cancel that discards its partial files."""

import pytest
from django.urls import reverse

from models_app import selectors, services
from models_app.models import Event, Installation, Operation, StoreScan
from models_app.services.reconcile import store_reconcile
from tests.factories import ModelFactory, OperationFactory
from tests.hub_cache import write_partial, write_snapshot
from tests.processes import operation_thread, wait_until

pytestmark = pytest.mark.django_db

API = "/api/v1"
PAGE = "/settings/models/"
HTMX = {"HTTP_HX_REQUEST": "true"}
C1 = "1" * 40
BLOB_A, BLOB_B, FOREIGN = "a" * 64, "b" * 64, "f" * 64


@pytest.fixture
def fresh():
    """A model that was never installed."""
    return ModelFactory(key="fresh", repo_id="acme/fresh", allow_patterns=["*.safetensors"])


@pytest.fixture
def installed(isolated_store):
    """A model installed in the store (its files on disk, reconciled)."""
    model = ModelFactory(key="kept", repo_id="acme/kept", allow_patterns=["*.safetensors"])
    write_snapshot(isolated_store, "acme/kept", C1, {"model.safetensors": b"w" * 2000})
    store_reconcile()
    assert Installation.objects.filter(model=model).exists()
    return model


def _model(request, name):
    return request.getfixturevalue(name)


# --- a delete while a download is queued or running -------------------------------------


@pytest.mark.parametrize("state", ["queued", "running"])
@pytest.mark.parametrize("which", ["fresh", "installed"])
def test_api_delete_during_a_download_is_409_naming_it(superuser_client, request, which, state):
    model = _model(request, which)
    download = OperationFactory(model=model, kind="download", state=state)
    response = superuser_client.delete(f"{API}/models/{model.key}?confirm=true")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "ERR_ALREADY_RUNNING"
    assert body["details"] == {"operation": download.id, "kind": "download", "state": state}
    assert f"#{download.id}" in body["message"] and "discard" in body["message"]
    assert Operation.objects.filter(model=model).count() == 1


def test_a_collection_does_not_hide_the_running_download(superuser_client, installed):
    from tests.factories import CollectionFactory

    CollectionFactory(name="docs", embedding_model=installed)
    download = OperationFactory(model=installed, kind="download", state="running")
    response = superuser_client.delete(f"{API}/models/{installed.key}")
    assert (response.status_code, response.json()["code"]) == (409, "ERR_ALREADY_RUNNING")
    assert response.json()["details"]["operation"] == download.id


def test_not_installed_and_idle_is_still_a_no_op(superuser_client, fresh):
    response = superuser_client.delete(f"{API}/models/{fresh.key}")
    assert response.status_code == 200 and response.json()["status"] == "not_installed"


@pytest.mark.parametrize("state", ["queued", "running"])
def test_page_delete_during_a_download_is_409_on_the_card(superuser_client, fresh, state):
    download = OperationFactory(model=fresh, kind="download", state=state)
    url = f"{PAGE}{fresh.key}/delete/"
    for response in (
        superuser_client.get(url, **HTMX),  # the dialog is not offered
        superuser_client.post(url, {"confirm": "true"}, **HTMX),
    ):
        assert response.status_code == 409
        assert response["X-Modelyard-Error"] == "ERR_ALREADY_RUNNING"
        html = response.content.decode()
        assert "ERR_ALREADY_RUNNING" in html and f"#{download.id}" in html
        # The card offers the way out: cancel, with or without the partial files.
        assert 'data-testid="cancel"' in html and 'data-testid="cancel-discard"' in html
    assert Operation.objects.filter(model=fresh).count() == 1


def test_admin_delete_during_a_download_says_so(superuser_client, fresh):
    download = OperationFactory(model=fresh, kind="download", state="running")
    response = superuser_client.post(
        reverse("admin:models_app_model_changelist"),
        {"action": "delete_files", "_selected_action": [fresh.pk], "confirm": "yes"},
        follow=True,
    )
    text = " ".join(str(m) for m in response.context["messages"])
    assert "Cannot delete fresh: ERR_ALREADY_RUNNING" in text and f"#{download.id}" in text
    assert Operation.objects.filter(model=fresh).count() == 1


def test_activating_a_model_being_deleted_is_409(superuser_client, installed):
    delete = OperationFactory(model=installed, kind="delete", state="queued")
    response = superuser_client.post(f"{API}/models/{installed.key}/activate")
    assert (response.status_code, response.json()["code"]) == (409, "ERR_ALREADY_RUNNING")
    assert response.json()["details"]["operation"] == delete.id


def test_prune_plan_skips_a_busy_model(installed):
    download = OperationFactory(model=installed, kind="download", state="running")
    plan = services.prune_plan(need_bytes=10**12)
    assert [i.model for i in plan.removals] == []
    (skipped,) = plan.skipped
    assert skipped.model == installed.key and f"#{download.id}" in skipped.reason


# --- cancel, discarding the partial files -----------------------------------------------


def _partials(store):
    return sorted(p.name for p in store.rglob("*.incomplete*"))


@pytest.fixture
def partials(isolated_store, fresh):
    """Partial files of fresh's download (A with its resume sidecar, B), and another repo's."""
    a = write_partial(isolated_store, "acme/fresh", BLOB_A, 1000)
    a.with_name(a.name + ".json").write_text("{}")
    write_partial(isolated_store, "acme/fresh", BLOB_B, 500)
    write_partial(isolated_store, "acme/other", FOREIGN, 700)
    store_reconcile()
    assert StoreScan.objects.latest().partial_bytes == 2200
    return isolated_store


def _planned(model, **fields):
    plan = [{"path": f"{b}.bin", "size": 10_000, "blob_id": b} for b in (BLOB_A, BLOB_B)]
    return OperationFactory(model=model, kind="download", plan=plan, **fields)


FOREIGN_ONLY = [f"{FOREIGN}.incomplete"]


def test_api_cancel_of_a_queued_download_discards_its_partials(superuser_client, fresh, partials):
    op = _planned(fresh, state="queued")
    response = superuser_client.post(
        f"{API}/operations/{op.id}/cancel",
        {"discard_partial": True},
        content_type="application/json",
    )
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "cancelled"
    assert body["result"]["partial_bytes_discarded"] == 1500
    assert _partials(partials) == FOREIGN_ONLY
    assert StoreScan.objects.latest().partial_bytes == 700  # the folder was reconciled
    assert "discarded" in Event.objects.get(kind="cancelled", operation=op).message


def test_api_cancel_without_the_option_keeps_the_partials(superuser_client, fresh, partials):
    op = _planned(fresh, state="queued")
    assert superuser_client.post(f"{API}/operations/{op.id}/cancel").status_code == 200
    assert len(_partials(partials)) == 4


@pytest.mark.parametrize("state", ["failed", "cancelled", "interrupted"])
def test_discard_after_the_download_ended(superuser_client, fresh, partials, state):
    op = _planned(fresh, state=state)
    url = f"{API}/operations/{op.id}/cancel"
    plain = superuser_client.post(url)
    assert (plain.status_code, plain.json()["code"]) == (409, "ERR_INVALID_STATE")
    response = superuser_client.post(
        url, {"discard_partial": True}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["state"] == state  # ended as it was; only its files went
    assert _partials(partials) == FOREIGN_ONLY
    assert StoreScan.objects.latest().partial_bytes == 700


def test_discard_is_refused_while_another_operation_holds_the_model(
    superuser_client, fresh, partials
):
    old = _planned(fresh, state="failed")
    retry = _planned(fresh, state="running")
    response = superuser_client.post(
        f"{API}/operations/{old.id}/cancel",
        {"discard_partial": True},
        content_type="application/json",
    )
    assert (response.status_code, response.json()["code"]) == (409, "ERR_ALREADY_RUNNING")
    assert response.json()["details"]["operation"] == retry.id
    assert len(_partials(partials)) == 4


def test_discard_is_only_for_downloads(superuser_client, installed):
    delete = OperationFactory(model=installed, kind="delete", state="queued")
    response = superuser_client.post(
        f"{API}/operations/{delete.id}/cancel",
        {"discard_partial": True},
        content_type="application/json",
    )
    assert (response.status_code, response.json()["code"]) == (422, "ERR_INVALID")
    assert Operation.objects.get(pk=delete.pk).state == "queued"


def test_discard_of_a_succeeded_download_is_invalid_state(superuser_client, fresh):
    op = OperationFactory(model=fresh, kind="download", state="succeeded")
    response = superuser_client.post(
        f"{API}/operations/{op.id}/cancel",
        {"discard_partial": True},
        content_type="application/json",
    )
    assert (response.status_code, response.json()["code"]) == (409, "ERR_INVALID_STATE")


def test_retry_after_a_discard_request_keeps_its_partials(fresh, partials):
    op = _planned(fresh, state="running")
    services.operation_cancel(operation=op, discard_partial=True)
    Operation.objects.filter(pk=op.pk).update(state="interrupted")  # the worker died first
    op = services.operation_retry(operation=op)
    assert not Operation.objects.get(pk=op.pk).discard_partial


@pytest.mark.django_db(transaction=True)
def test_cancel_of_a_running_download_discards_its_partials_when_the_worker_stops(
    superuser_client, hub, isolated_store
):
    embed = ModelFactory(
        key="tiny-embed", repo_id="acme/tiny-embed", allow_patterns=["*.json", "*.safetensors"]
    )
    write_partial(isolated_store, "acme/other", FOREIGN, 700)
    store_reconcile()
    hub.add_fault("model.safetensors", "throttle", bytes_per_sec=400_000)
    op = services.download_start(model=embed).operation
    thread, outcome = operation_thread(op.id)
    wait_until(
        lambda: Operation.objects.get(pk=op.pk).bytes_done >= 200_000,
        timeout=10,
        what="200 kB of progress",
    )
    assert any(
        p.endswith(".incomplete") for p in _partials(isolated_store / "models--acme--tiny-embed")
    )
    response = superuser_client.post(
        f"{API}/operations/{op.id}/cancel",
        {"discard_partial": True},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["cancel_requested"]
    thread.join(timeout=10)
    assert outcome["state"] == "cancelled"
    op.refresh_from_db()
    assert op.error_code == "ERR_CANCELLED" and "discarded" in op.error_message
    assert op.result["partial_bytes_discarded"] >= 200_000
    assert _partials(isolated_store) == FOREIGN_ONLY
    assert not Installation.objects.filter(model=embed).exists()
    assert StoreScan.objects.latest().partial_bytes == 700  # the folder was reconciled


def test_page_cancel_offers_and_applies_the_discard(superuser_client, fresh, partials):
    op = _planned(fresh, state="queued")
    card = superuser_client.get(f"{PAGE}{fresh.key}/card/", **HTMX).content.decode()
    assert 'data-testid="cancel-discard"' in card and "Cancel and discard partial files" in card
    response = superuser_client.post(
        f"{PAGE}operations/{op.id}/cancel/", {"discard_partial": "on"}, **HTMX
    )
    assert response.status_code == 200
    assert "discarded" in response["HX-Trigger"]
    assert Operation.objects.get(pk=op.pk).state == "cancelled"
    assert _partials(partials) == FOREIGN_ONLY


def test_page_offers_the_discard_for_a_failed_download(superuser_client, fresh, partials):
    op = _planned(fresh, state="failed", error_code="ERR_NETWORK")
    card = superuser_client.get(f"{PAGE}{fresh.key}/card/", **HTMX).content.decode()
    assert 'data-testid="retry"' in card and 'data-testid="discard"' in card
    response = superuser_client.post(
        f"{PAGE}operations/{op.id}/cancel/", {"discard_partial": "on"}, **HTMX
    )
    assert response.status_code == 200
    assert _partials(partials) == FOREIGN_ONLY
    # Nothing is left to discard: the card offers the retry only.
    assert 'data-testid="discard"' not in response.content.decode()


def test_admin_cancel_and_discard(superuser_client, fresh, partials):
    op = _planned(fresh, state="queued")
    response = superuser_client.post(
        reverse("admin:models_app_operation_changelist"),
        {"action": "cancel_discard_selected", "_selected_action": [op.pk]},
        follow=True,
    )
    assert response.status_code == 200
    text = " ".join(str(m) for m in response.context["messages"])
    assert f"#{op.pk}" in text and "cancelled" in text
    assert _partials(partials) == FOREIGN_ONLY


def test_selector_names_only_this_models_blobs(fresh):
    other = ModelFactory(key="other", repo_id="acme/fresh", allow_patterns=["x.bin"])
    _planned(fresh, state="failed")
    OperationFactory(model=other, kind="download", state="running", plan=[{"blob_id": "c" * 64}])
    assert selectors.download_blobs(model=fresh) == {BLOB_A, BLOB_B}


@pytest.mark.parametrize("body", ['{"discard_partial": "yes"}', '{"discard_partial": 1}', "{nope"])
def test_cancel_body_is_strict(superuser_client, fresh, body):
    op = OperationFactory(model=fresh, kind="download", state="queued")
    response = superuser_client.post(
        f"{API}/operations/{op.id}/cancel", body, content_type="application/json"
    )
    assert (response.status_code, response.json()["code"]) == (422, "ERR_INVALID")
    assert response.json()["details"]["errors"]
    assert Operation.objects.get(pk=op.pk).state == "queued"


def test_the_cancel_body_is_in_the_openapi_spec(superuser_client):
    spec = superuser_client.get(f"{API}/openapi.json").json()
    body = spec["paths"]["/api/v1/operations/{operation_id}/cancel"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert not body["required"] and schema["properties"]["discard_partial"]["type"] == "boolean"
