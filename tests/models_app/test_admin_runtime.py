"""The admin's runtime instances: a read-only list, filters, Unload through the service."""

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from models_app.models import Operation, RuntimeInstance
from tests.factories import ModelFactory, OperationFactory

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:models_app_runtimeinstance_changelist")


def instance(key, **fields):
    model = ModelFactory(
        key=key, name=key.title(), type=fields.pop("type", "llm"), gguf_file=f"{key}.gguf",
        allow_patterns=[],
    )  # fmt: skip
    values = {
        "host": "test-host", "state": "ready", "pid": 4242, "port": 40123,
        "secret": "runner-secret-never-shown", "n_ctx": 4096, "n_threads": 2, "keep_alive": 300,
        "memory_estimate": 300 * 1024**2, "rss": 312 * 1024**2,
        "expires_at": timezone.now() + timedelta(minutes=5), "requests_served": 7,
    }  # fmt: skip
    values.update(fields)
    return RuntimeInstance.objects.create(model=model, **values)


@pytest.fixture
def instances():
    return {
        "ready": instance("ready-llm"),
        "forever": instance("forever-embed", type="embedding", host="other-host", keep_alive=-1,
                            expires_at=None),
        "failed": instance("failed-llm", state="failed", port=None, expires_at=None,
                           error_code="ERR_INTERNAL", error_message="The runner died."),
    }  # fmt: skip


def test_list_shows_model_host_state_memory_expiry_and_requests(superuser_client, instances):
    response = superuser_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    for key in ("ready-llm", "forever-embed", "failed-llm"):
        assert key in html
    assert "other-host" in html and "ERR_INTERNAL" in html
    assert "300.0\xa0MB" in html and "312.0\xa0MB" in html and "never" in html
    assert ">7<" in html


@pytest.mark.parametrize(
    "query, shown, hidden",
    [
        ("state__exact=failed", "failed-llm", "ready-llm"),
        ("host=other-host", "forever-embed", "ready-llm"),
        ("model__type__exact=embedding", "forever-embed", "failed-llm"),
        ("error_code=ERR_INTERNAL", "failed-llm", "forever-embed"),
        ("q=ready", "ready-llm", "failed-llm"),
    ],
)
def test_filters_and_search(superuser_client, instances, query, shown, hidden):
    html = superuser_client.get(f"{CHANGELIST}?{query}").content.decode()
    assert f"{shown} on" in html and f"{hidden} on" not in html


def test_the_runner_secret_is_never_shown(superuser_client, instances):
    url = reverse("admin:models_app_runtimeinstance_change", args=[instances["ready"].pk])
    response = superuser_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "runner-secret-never-shown" not in html and "40123" in html


def test_rows_are_never_added_changed_or_deleted_by_hand(superuser_client, instances):
    ready = instances["ready"]
    assert superuser_client.get(reverse("admin:models_app_runtimeinstance_add")).status_code == 403
    change = reverse("admin:models_app_runtimeinstance_change", args=[ready.pk])
    assert superuser_client.post(change, {"state": "failed"}).status_code == 403
    delete = reverse("admin:models_app_runtimeinstance_delete", args=[ready.pk])
    assert superuser_client.post(delete, {"post": "yes"}).status_code == 403
    response = superuser_client.post(
        CHANGELIST, {"action": "delete_selected", "_selected_action": [ready.pk]}
    )
    assert RuntimeInstance.objects.filter(pk=ready.pk, state="ready").exists()
    assert "delete_selected" not in superuser_client.get(CHANGELIST).content.decode()
    assert response.status_code in (200, 302)


def test_unload_action_goes_through_the_service(superuser_client, superuser, instances):
    response = superuser_client.post(
        CHANGELIST,
        {
            "action": "unload_selected",
            "_selected_action": [instances["ready"].pk, instances["failed"].pk],
        },
        follow=True,
    )
    html = response.content.decode()
    assert "Unload of Ready-Llm queued." in html
    assert "Cannot unload failed-llm: ERR_INVALID_STATE: failed-llm is not loaded." in html
    op = Operation.objects.get(kind="unload")
    assert op.model == instances["ready"].model and op.state == "queued"
    assert op.worker_host == "test-host" and op.created_by == superuser
    # The row is the runtime's: its supervisor stops the runner and removes it.
    assert RuntimeInstance.objects.get(pk=instances["ready"].pk).state == "ready"


def test_unload_action_while_another_operation_holds_the_model(superuser_client, instances):
    OperationFactory(model=instances["ready"].model, kind="delete", state="running")
    response = superuser_client.post(
        CHANGELIST,
        {"action": "unload_selected", "_selected_action": [instances["ready"].pk]},
        follow=True,
    )
    assert "Cannot unload ready-llm: ERR_ALREADY_RUNNING" in response.content.decode()
    assert not Operation.objects.filter(kind="unload").exists()


def test_a_second_unload_reports_the_one_queued(superuser_client, instances):
    data = {"action": "unload_selected", "_selected_action": [instances["ready"].pk]}
    superuser_client.post(CHANGELIST, data)
    response = superuser_client.post(CHANGELIST, data, follow=True)
    assert "Ready-Llm:" in response.content.decode()
    assert Operation.objects.filter(kind="unload").count() == 1


def test_staff_and_anonymous_are_refused(user_client, instances):
    assert user_client.get(CHANGELIST).status_code == 403
    response = Client().get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
