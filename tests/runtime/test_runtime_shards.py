"""A split GGUF in the runtime: the real Gemma 3 270M in three shards, loaded by its first.

The shards are llama.cpp's split format written by the `gguf` package (tests/gguf_shards.py);
llama.cpp opens the second and third beside the first in the snapshot folder. Slow (a real
llama.cpp load): marked `runtime`.
"""

import json
import os
import urllib.request

import pytest

from models_app.models import Installation
from models_app.services import store_reconcile
from models_app.services.runtime import runtime_load_start, runtime_unload_start
from tests.factories import ModelFactory
from tests.gguf_shards import gemma_split  # noqa: F401  (a fixture)
from tests.runtime_helpers import COMMIT, wait_gone, wait_ready

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.runtime]

TENSOR_BYTES = 246_587_904  # the unsplit file's tensors (runtime/memory.py's calibration)


def install_shards(model, shards, hub_dir):
    """Put every shard into the store: blobs hard-linked from the cache, links in one snapshot."""
    repo = hub_dir / ("models--" + model.repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for index, source in enumerate(shards):
        blob = repo / "blobs" / f"shard-{index}-{source.stat().st_size}"
        try:
            os.link(source, blob)
        except OSError:  # another filesystem
            blob.write_bytes(source.read_bytes())
        os.symlink(os.path.relpath(blob, snapshot), snapshot / source.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    store_reconcile(publish=False)


@pytest.fixture
def gemma_shards(settings, gemma_split):  # noqa: F811
    model = ModelFactory(
        key="gemma-3-270m-split",
        repo_id="test/gemma-3-270m-split-GGUF",
        type="llm",
        name="Gemma 3 270M in three shards",
        gguf_file=gemma_split[0].name,
        allow_patterns=[],
        context_window=32768,
        source="custom",
    )
    assert model.file_patterns == [p.name for p in gemma_split]
    install_shards(model, gemma_split, settings.MODELS_HUB_DIR)
    return model


def test_the_split_gemma_loads_by_its_first_shard_and_answers(gemma_shards, processes):
    inst = Installation.objects.get(model=gemma_shards)
    assert inst.files == gemma_shards.file_patterns
    gemma_shards.refresh_from_db()
    facts = gemma_shards.gguf_facts
    assert facts["split_count"] == 3 and facts["architecture"] == "gemma3"
    assert facts["tensor_bytes"] == TENSOR_BYTES  # the weights of all three shards
    assert gemma_shards.ram_required > TENSOR_BYTES

    processes.runtime()
    result = runtime_load_start(model=gemma_shards)
    assert result.status == "loading", result
    instance = wait_ready(gemma_shards, timeout=120)
    # Every shard is mapped: the runner holds more than the first shard's 200 MB of tensors.
    assert instance.rss > TENSOR_BYTES
    request = urllib.request.Request(
        f"http://127.0.0.1:{instance.port}/v1/completions",
        data=json.dumps({"prompt": "The capital of France is", "max_tokens": 8}).encode(),
        headers={"Authorization": f"Bearer {instance.secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    assert body["usage"]["completion_tokens"] > 0
    assert body["choices"][0]["text"].strip()
    assert runtime_unload_start(model=gemma_shards).created
    wait_gone(gemma_shards)
