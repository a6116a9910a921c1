"""Collection, preference and LLM-config services: type rules, duplicates, the delete race."""

import threading

import pytest
from django.db import connection, transaction

from collections_app import services
from collections_app.models import Collection, LLMConfig, UserPreference
from models_app.errors import AlreadyExists, Incompatible, InvalidInput, NotFound
from models_app.models import Model
from tests.factories import CollectionFactory, LLMConfigFactory, ModelFactory, UserFactory
from tests.processes import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def models():
    return {
        "embedding": ModelFactory(key="bge-small-en-v1.5", type="embedding"),
        "embedding2": ModelFactory(key="minilm", type="embedding"),
        "reranker": ModelFactory(key="bge-reranker", type="reranker"),
        "splade": ModelFactory(key="splade-v3", type="splade"),
        "llm": ModelFactory(key="qwen-q4", type="llm"),
    }


def test_collection_create_with_every_role(models):
    owner = UserFactory()
    collection = services.collection_create(
        name="  docs ",
        description="Product docs",
        embedding_model=models["embedding"],
        reranker_model=models["reranker"],
        splade_model=models["splade"],
        owner=owner,
    )
    collection.refresh_from_db()
    assert collection.name == "docs"
    assert collection.owner == owner
    assert (collection.embedding_model, collection.reranker_model, collection.splade_model) == (
        models["embedding"], models["reranker"], models["splade"],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("field", "wrong", "expected"),
    [
        ("embedding_model", "llm", "embedding"),
        ("reranker_model", "embedding2", "reranker"),
        ("splade_model", "reranker", "splade"),
    ],
)
def test_collection_create_with_wrong_type_is_incompatible(models, field, wrong, expected):
    roles = {"embedding_model": models["embedding"], field: models[wrong]}
    with pytest.raises(Incompatible) as exc:
        services.collection_create(name="docs", **roles)
    model = models[wrong]
    assert exc.value.details == {
        "model": model.key, "model_type": model.type, "expected_type": expected, "field": field,
    }  # fmt: skip
    assert model.key in exc.value.message and expected in exc.value.message
    assert not Collection.objects.exists()


def test_collection_create_duplicate_name_already_exists(models):
    services.collection_create(name="docs", embedding_model=models["embedding"])
    with pytest.raises(AlreadyExists) as exc:
        services.collection_create(name="docs", embedding_model=models["embedding2"])
    assert exc.value.details == {"field": "name", "name": "docs"}
    assert Collection.objects.count() == 1


def test_collection_create_needs_a_name(models):
    with pytest.raises(InvalidInput):
        services.collection_create(name="   ", embedding_model=models["embedding"])


def test_collection_create_with_a_model_deleted_meanwhile_is_not_found(models):
    gone = models["embedding2"]
    Model.objects.filter(pk=gone.pk).delete()
    with pytest.raises(NotFound) as exc:
        services.collection_create(name="docs", embedding_model=gone)
    assert exc.value.details == {"model": "minilm"}
    assert not Collection.objects.exists()


def test_collection_update_changes_only_the_given_fields(models):
    collection = CollectionFactory(
        name="docs", description="old", embedding_model=models["embedding"]
    )
    services.collection_update(
        collection=collection, reranker_model=models["reranker"], description="new"
    )
    collection.refresh_from_db()
    assert collection.description == "new"
    assert collection.reranker_model == models["reranker"]
    assert collection.embedding_model == models["embedding"]
    services.collection_update(collection=collection, reranker_model=None)
    collection.refresh_from_db()
    assert collection.reranker_model is None


def test_collection_update_bumps_updated_at(models):
    collection = CollectionFactory(embedding_model=models["embedding"])
    before = collection.updated_at
    services.collection_update(collection=collection, name="renamed")
    collection.refresh_from_db()
    assert collection.updated_at > before


@pytest.mark.parametrize(
    ("field", "wrong"),
    [("embedding_model", "reranker"), ("reranker_model", "splade"), ("splade_model", "llm")],
)
def test_collection_update_with_wrong_type_is_incompatible(models, field, wrong):
    collection = CollectionFactory(embedding_model=models["embedding"])
    with pytest.raises(Incompatible):
        services.collection_update(collection=collection, **{field: models[wrong]})
    collection.refresh_from_db()
    assert collection.embedding_model == models["embedding"]


def test_collection_update_cannot_clear_the_embedding_model(models):
    collection = CollectionFactory(embedding_model=models["embedding"])
    with pytest.raises(InvalidInput):
        services.collection_update(collection=collection, embedding_model=None)


def test_collection_update_to_a_taken_name_already_exists(models):
    CollectionFactory(name="taken", embedding_model=models["embedding"])
    collection = CollectionFactory(name="mine", embedding_model=models["embedding"])
    with pytest.raises(AlreadyExists):
        services.collection_update(collection=collection, name="taken")
    assert collection.name == "mine"  # the in-memory row is restored too


def test_collection_delete(models):
    collection = CollectionFactory(embedding_model=models["embedding"])
    services.collection_delete(collection=collection)
    assert not Collection.objects.exists()
    assert Model.objects.filter(pk=models["embedding"].pk).exists()


def test_preference_set_creates_updates_and_clears(models):
    user = UserFactory()
    pref = services.preference_set(
        user=user, default_embedding_model=models["embedding"], default_llm=models["llm"]
    )
    assert (pref.default_embedding_model, pref.default_llm, pref.default_reranker) == (
        models["embedding"], models["llm"], None,
    )  # fmt: skip
    services.preference_set(user=user, default_reranker=models["reranker"], default_llm=None)
    pref = UserPreference.objects.get(user=user)
    assert pref.default_embedding_model == models["embedding"]  # not sent: kept
    assert pref.default_llm is None
    assert pref.default_reranker == models["reranker"]


@pytest.mark.parametrize(
    ("field", "wrong", "expected"),
    [
        ("default_embedding_model", "llm", "embedding"),
        ("default_llm", "embedding", "llm"),
        ("default_reranker", "splade", "reranker"),
    ],
)
def test_preference_set_with_wrong_type_is_incompatible(models, field, wrong, expected):
    with pytest.raises(Incompatible) as exc:
        services.preference_set(user=UserFactory(), **{field: models[wrong]})
    assert exc.value.details["expected_type"] == expected
    assert not UserPreference.objects.exists()


def test_llm_config_set_creates_then_updates(models):
    config, created = services.llm_config_set(name="high", description="HyDE", model=models["llm"])
    assert created and config.model == models["llm"]
    config, created = services.llm_config_set(name="high", description="Summaries")
    assert not created
    config.refresh_from_db()
    assert (config.description, config.model) == ("Summaries", models["llm"])
    config, _ = services.llm_config_set(name="high", model=None)
    config.refresh_from_db()
    assert config.model is None and config.description == "Summaries"
    assert LLMConfig.objects.count() == 1


def test_llm_config_set_with_wrong_type_is_incompatible(models):
    with pytest.raises(Incompatible) as exc:
        services.llm_config_set(name="high", model=models["embedding"])
    assert exc.value.details["expected_type"] == "llm"
    assert not LLMConfig.objects.exists()


def test_llm_config_delete():
    config = LLMConfigFactory(name="low")
    services.llm_config_delete(config=config)
    assert not LLMConfig.objects.exists()


# --- the race with model deletion (real threads, real connections) -------------------


def _simulated_model_delete(model, locked, release):
    """Do what the model delete does: lock the row, check usage, delete when unused."""

    def run():
        try:
            with transaction.atomic():
                Model.objects.select_for_update().get(pk=model.pk)
                locked.set()
                release.wait(10)
                used = (
                    Collection.objects.filter(embedding_model=model).exists()
                    or Collection.objects.filter(reranker_model=model).exists()
                )
                if not used:
                    Model.objects.filter(pk=model.pk).delete()
        finally:
            connection.close()

    return threading.Thread(target=run)


def _in_thread(target, results):
    def run():
        try:
            results.append(target())
        except Exception as exc:  # collected and asserted on below
            results.append(exc)
        finally:
            connection.close()

    return threading.Thread(target=run)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
@pytest.mark.parametrize("action", ["create", "update"])
def test_collection_write_waits_for_a_model_delete_holding_the_lock(models, action):
    target_model = models["embedding2"] if action == "create" else models["reranker"]
    collection = CollectionFactory(name="existing", embedding_model=models["embedding"])
    locked, release = threading.Event(), threading.Event()
    deleter = _simulated_model_delete(target_model, locked, release)
    deleter.start()
    assert locked.wait(10)

    def write():
        if action == "create":
            return services.collection_create(name="docs", embedding_model=target_model)
        return services.collection_update(collection=collection, reranker_model=target_model)

    results = []
    writer = _in_thread(write, results)
    writer.start()

    def writer_waits_on_a_lock() -> bool:
        # PostgreSQL names the backends that wait on a lock another holds; the only other
        # connections here are the deleter (idle in its transaction) and the writer.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND cardinality(pg_blocking_pids(pid)) > 0"
            )
            return cursor.fetchone()[0] > 0

    wait_until(writer_waits_on_a_lock, timeout=10, what="the writer to wait on the row lock")
    assert writer.is_alive(), results  # blocked on the model row the delete holds
    release.set()
    deleter.join(10)
    writer.join(10)
    assert isinstance(results[0], NotFound), results
    assert not Model.objects.filter(pk=target_model.pk).exists()
    assert not Collection.objects.filter(name="docs").exists()
    collection.refresh_from_db()
    assert collection.reranker_model is None
