"""Hardware fit: the runtime's capacity, each model's fit, the recommended model, the API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from models_app.errors import InsufficientRam, NotFound
from models_app.models import ProcessHeartbeat
from models_app.runtime.memory import host_memory, memory_estimate
from models_app.selectors import model_fit, model_recommended, runtime_capacity
from tests.factories import ModelFactory

pytestmark = pytest.mark.django_db

API = "/api/v1"
GIB = 1024**3
RESERVE = 2 * GIB
# Facts whose estimate at n_ctx 4096 is easy to read: no KV heads beyond one tiny layer.
FACTS = {
    "architecture": "llama",
    "block_count": 1,
    "embedding_length": 64,
    "head_count": 1,
    "head_count_kv": 1,
    "key_length": 8,
    "value_length": 8,
    "context_length": 8192,
    "vocab_size": 0,
}


@pytest.fixture(autouse=True)
def memory_settings(settings):
    settings.RUNTIME_MEMORY_RESERVE = RESERVE
    settings.RUNTIME_MEMORY_BUDGET = None
    settings.RUNTIME_DEFAULT_N_CTX = 4096
    settings.PROCESS_HEARTBEAT_INTERVAL = 5.0
    return settings


def _beat(host, *, total, available, pid=1, age=0.0):
    now = timezone.now() - timedelta(seconds=age)
    return ProcessHeartbeat.objects.create(
        role="runtime",
        host=host,
        pid=pid,
        started_at=now,
        beat_at=now,
        facts={"ram_total": total, "ram_available": available, "budget": None, "threads": 2},
    )


def _overhead() -> int:
    """What an entry whose weights are 0 needs: the estimate's fixed part at n_ctx 4096."""
    return memory_estimate(facts=FACTS, n_ctx=4096, file_size=1).total - 1


def _gguf(key, *, weights, recommended=False, type="llm", **extra):
    """A GGUF entry whose requirement at n_ctx 4096 is `weights` + the fixed part."""
    return ModelFactory(
        key=key,
        type=type,
        gguf_file=f"{key}.gguf",
        allow_patterns=[],
        download_size=weights,
        gguf_facts={**FACTS, "source": "registry"},
        recommended=recommended,
        **extra,
    )


# --- capacity -----------------------------------------------------------------------------


def test_capacity_is_the_largest_fresh_runtime_host():
    _beat("small", total=8 * GIB, available=6 * GIB)
    _beat("large", total=32 * GIB, available=20 * GIB)
    _beat("stale", total=64 * GIB, available=64 * GIB, age=60)
    capacity = runtime_capacity()
    assert (capacity.host, capacity.source) == ("large", "runtime")
    assert capacity.bytes == 30 * GIB  # RAM less the reserve
    assert capacity.ram_available == 20 * GIB and capacity.usable == 18 * GIB


def test_a_budget_is_the_capacity_and_bounds_what_is_usable(settings):
    settings.RUNTIME_MEMORY_BUDGET = 4 * GIB
    _beat("host", total=32 * GIB, available=20 * GIB)
    capacity = runtime_capacity()
    assert capacity.bytes == 4 * GIB and capacity.usable == 4 * GIB


def test_a_host_counts_by_its_freshest_beat():
    _beat("host", total=16 * GIB, available=1 * GIB, pid=1, age=5)
    _beat("host", total=16 * GIB, available=9 * GIB, pid=2)
    assert runtime_capacity().ram_available == 9 * GIB


def test_without_a_runtime_this_host_stands_for_it(settings):
    _beat("stale", total=64 * GIB, available=64 * GIB, age=60)
    capacity = runtime_capacity()
    memory = host_memory()
    assert (capacity.host, capacity.source) == (settings.HOST_NAME, "this host")
    assert capacity.ram_total == memory.total
    assert capacity.bytes == max(0, memory.total - RESERVE)


# --- one model's fit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity_of", "status"),
    [
        (lambda required: int(required / 0.8) + 1, "fits"),  # within 80% of the capacity
        (lambda required: required, "tight"),
        (lambda required: required - 1, "does_not_fit"),
    ],
)
def test_fit_statuses(capacity_of, status):
    model = _gguf("m", weights=GIB)
    required = GIB + _overhead()
    capacity = capacity_of(required)
    assert model_fit(model, capacity=capacity) == {
        "status": status,
        "required": required,
        "capacity": capacity,
        "n_ctx": 4096,
    }


def test_fit_is_unknown_without_facts_or_figures():
    model = ModelFactory(key="bare", type="llm", gguf_file="b.gguf", allow_patterns=[])
    assert model_fit(model, capacity=GIB)["status"] == "unknown"
    assert model_fit(model, capacity=GIB)["required"] is None


def test_a_stored_ram_required_stands_for_the_default_n_ctx_only():
    model = ModelFactory(
        key="figured", type="llm", gguf_file="f.gguf", allow_patterns=[], ram_required=GIB
    )
    assert model_fit(model, capacity=4 * GIB)["required"] == GIB
    assert model_fit(model, capacity=4 * GIB, n_ctx=8192)["status"] == "unknown"


def test_a_non_gguf_entry_is_not_runnable():
    model = ModelFactory(key="st", type="embedding", ram_required=GIB)
    assert model_fit(model, capacity=4 * GIB) == {
        "status": "not_runnable",
        "required": None,
        "capacity": 4 * GIB,
        "n_ctx": 4096,
    }


def test_n_ctx_is_held_to_the_trained_context():
    model = ModelFactory(
        key="short",
        type="embedding",
        gguf_file="s.gguf",
        allow_patterns=[],
        download_size=100,
        gguf_facts={**FACTS, "context_length": 512},
    )
    fit = model_fit(model, capacity=GIB)
    assert fit["n_ctx"] == 512
    expected = memory_estimate(facts=model.gguf_facts, n_ctx=512, file_size=100)
    assert fit["required"] == expected.total


# --- the recommended model ----------------------------------------------------------------


def test_recommended_is_the_largest_recommended_that_fits():
    _beat("host", total=16 * GIB, available=10 * GIB)  # usable: 8 GiB
    _gguf("small-rec", weights=1 * GIB, recommended=True)
    _gguf("mid-rec", weights=5 * GIB, recommended=True)
    _gguf("big-rec", weights=9 * GIB, recommended=True)
    _gguf("mid-plain", weights=7 * GIB)
    _gguf("other-type", weights=6 * GIB, recommended=True, type="embedding")
    picked = model_recommended(type="llm")
    assert picked["model"].key == "mid-rec"
    assert picked["usable"] == 8 * GIB
    assert picked["required"] == 5 * GIB + _overhead()
    assert picked["reason"] == (
        f"{picked['model'].name} is the largest of the recommended LLMs that fit: it needs "
        f"5.1 GiB at n_ctx 4096, and 8.0 GiB is usable (10.0 GiB available on host less "
        f"the 2.0 GiB reserve)."
    )


def test_without_a_recommended_one_that_fits_the_largest_that_fits():
    _beat("host", total=16 * GIB, available=6 * GIB)  # usable: 4 GiB
    _gguf("big-rec", weights=9 * GIB, recommended=True)
    _gguf("a", weights=1 * GIB)
    _gguf("b", weights=3 * GIB)
    picked = model_recommended(type="llm")
    assert picked["model"].key == "b"
    assert "no recommended one does" in picked["reason"]


def test_none_fits_names_both_numbers_and_the_smallest():
    _beat("host", total=8 * GIB, available=3 * GIB)  # usable: 1 GiB
    _gguf("big", weights=4 * GIB, recommended=True)
    _gguf("smaller", weights=2 * GIB)
    with pytest.raises(InsufficientRam) as info:
        model_recommended(type="llm")
    assert info.value.code == "ERR_INSUFFICIENT_RAM"
    assert info.value.message == (
        "None of the LLMs fits in memory: the smallest, smaller, needs 2.1 GiB at n_ctx "
        "4096, and 1.0 GiB is usable (3.0 GiB available on host less the 2.0 GiB reserve)."
    )
    assert info.value.details["required"] == 2 * GIB + _overhead()
    assert info.value.details["usable"] == 1 * GIB


def test_no_sized_entry_of_the_type_is_not_found():
    ModelFactory(key="st", type="reranker")
    ModelFactory(key="bare", type="reranker", gguf_file="b.gguf", allow_patterns=[])
    with pytest.raises(NotFound, match="no reranker models that the built-in runtime runs"):
        model_recommended(type="reranker")


# --- the API ------------------------------------------------------------------------------


def test_the_list_and_the_detail_show_runnable_and_hardware_fit(superuser_client):
    _beat("host", total=12 * GIB, available=GIB)  # capacity: 10 GiB
    _gguf("fits", weights=GIB)
    _gguf("tight", weights=9 * GIB)
    _gguf("too-big", weights=11 * GIB)
    ModelFactory(key="unknown", type="llm", gguf_file="u.gguf", allow_patterns=[])
    ModelFactory(key="safetensors", type="embedding")
    items = superuser_client.get(f"{API}/models?page_size=200").json()["items"]
    fits = {item["key"]: (item["runnable"], item["hardware_fit"]["status"]) for item in items}
    assert fits == {
        "fits": (True, "fits"),
        "tight": (True, "tight"),
        "too-big": (True, "does_not_fit"),
        "unknown": (True, "unknown"),
        "safetensors": (False, "not_runnable"),
    }
    detail = superuser_client.get(f"{API}/models/tight").json()
    assert detail["runnable"] is True
    assert detail["hardware_fit"] == {
        "status": "tight",
        "required": 9 * GIB + _overhead(),
        "capacity": 10 * GIB,
        "n_ctx": 4096,
    }
    assert detail["gguf_facts"]["source"] == "registry"


def test_recommended_endpoint_picks_with_the_reason(superuser_client):
    _beat("host", total=16 * GIB, available=10 * GIB)
    _gguf("mid-rec", weights=5 * GIB, recommended=True)
    response = superuser_client.get(f"{API}/models/recommended?type=llm")
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["key"] == "mid-rec"
    assert body["model"]["hardware_fit"]["status"] == "fits"
    assert body["usable"] == 8 * GIB and body["n_ctx"] == 4096
    assert body["capacity"]["host"] == "host" and body["capacity"]["source"] == "runtime"
    assert body["reason"].startswith(f"{body['model']['name']} is the largest")


def test_recommended_endpoint_when_none_fits_is_409(superuser_client):
    _beat("host", total=8 * GIB, available=3 * GIB)
    _gguf("big", weights=4 * GIB)
    response = superuser_client.get(f"{API}/models/recommended?type=llm")
    assert response.status_code == 409
    assert response.json()["code"] == "ERR_INSUFFICIENT_RAM"


def test_recommended_endpoint_without_a_sized_entry_is_404(superuser_client):
    response = superuser_client.get(f"{API}/models/recommended?type=splade")
    assert response.status_code == 404
    assert response.json()["code"] == "ERR_NOT_FOUND"


@pytest.mark.parametrize("query", ["", "?type=vision", "?type="])
def test_recommended_endpoint_needs_a_type(superuser_client, query):
    response = superuser_client.get(f"{API}/models/recommended{query}")
    assert response.status_code == 422
    assert response.json()["code"] == "ERR_INVALID"


def test_recommended_endpoint_is_for_superusers(user_client, anonymous_client):
    assert user_client.get(f"{API}/models/recommended?type=llm").status_code == 403
    assert anonymous_client.get(f"{API}/models/recommended?type=llm").status_code == 401


def test_no_shipped_key_is_shadowed_by_the_recommended_route():
    """GET /models/recommended is declared before /models/{key}: a model keyed
    "recommended" would have no detail route, so none of the registry's is."""
    from pathlib import Path

    from models_app.registry import load_registry, registry_paths

    root = Path(__file__).resolve().parents[2] / "registry"
    keys = {e.key for e in load_registry(registry_paths(registry_dir=root, extra_files=[]))}
    assert "recommended" not in keys
