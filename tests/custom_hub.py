"""A hub test server with the repos the custom-entry tests add: GGUF, safetensors, gated, big.

Its own server (not conftest's shared one): the tests gate repos and tag them.
Import the fixtures into a test module: `from tests.custom_hub import custom_hub_fixture,
hub_custom_fixture`; tests then take `hub_custom`.
"""

from __future__ import annotations

import pytest

from tests.gguf_files import llama_metadata, write_gguf
from tests.hub_server import HubServer, make_repo

LLM_REPO = "acme/custom-llm-GGUF"
BIG_REPO = "acme/big-GGUF"
EMBED_REPO = "acme/custom-embed"
GATED_REPO = "acme/gated-GGUF"
VOCAB_REPO = "acme/vocab-GGUF"
GATED_TOKEN = "hf_gated_right_token"
BIG_PAYLOAD = 50 * 1024 * 1024  # zeros after a real header: what a header read must not fetch


def _build(root) -> None:
    staging = root / "_staging"
    staging.mkdir()
    q4 = write_gguf(staging / "q4.gguf", metadata=llama_metadata())
    q8 = write_gguf(staging / "q8.gguf", metadata=llama_metadata(**{"general.file_type": 7}))
    make_repo(
        root,
        LLM_REPO,
        {
            "custom-llm-Q4_K_M.gguf": q4.read_bytes(),
            "custom-llm-Q8_0.gguf": q8.read_bytes(),
            "README.md": "# a custom LLM\n",
        },
    )
    big = root / "acme" / "big-GGUF"
    big.mkdir(parents=True)
    with open(big / "big-Q4_K_M.gguf", "wb") as f:
        f.write(q4.read_bytes())
        f.truncate(q4.stat().st_size + BIG_PAYLOAD)  # zeros, without writing them one by one
    make_repo(root, GATED_REPO, {"gated-Q4_K_M.gguf": q4.read_bytes()})
    vocab = llama_metadata(**{"tokenizer.ggml.tokens": [f"token-{i:06d}" for i in range(30_000)]})
    make_repo(
        root, VOCAB_REPO, {"vocab-Q4_K_M.gguf": write_gguf(staging / "v.gguf", metadata=vocab)
        .read_bytes()},
    )  # fmt: skip
    make_repo(
        root,
        EMBED_REPO,
        {
            "config.json": b'{"hidden_size": 64}',
            "tokenizer.json": b'{"model": {}}',
            "model.safetensors": 4096,
            "1_Pooling/config.json": b'{"pooling_mode_cls_token": true}',
            "onnx/model.onnx": 2048,
            "README.md": "# an embedding model\n",
        },
    )
    for path in staging.iterdir():
        path.unlink()
    staging.rmdir()


@pytest.fixture(name="custom_hub", scope="session")
def custom_hub_fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom-hub")
    _build(root)
    server = HubServer(root).start()
    server.warm()
    server.set_repo_meta(LLM_REPO, pipeline_tag="text-generation")
    server.set_repo_meta(EMBED_REPO, pipeline_tag="sentence-similarity")
    server.set_repo_meta(BIG_REPO, pipeline_tag="text-generation")
    server.gate_repo(GATED_REPO, token=GATED_TOKEN)
    yield server
    server.stop()


@pytest.fixture(name="hub_custom")
def hub_custom_fixture(custom_hub, settings):
    """The custom hub with HF_ENDPOINT at it, no token, counters and faults reset."""
    settings.HF_ENDPOINT = custom_hub.url
    settings.HF_TOKEN = None
    settings.DOWNLOAD_RETRY_BASE_DELAY = 0.01
    settings.DOWNLOAD_RETRY_MAX_DELAY = 0.05
    settings.DOWNLOAD_DISK_RESERVE = 0
    custom_hub.clear_faults()
    custom_hub.reset_counters()
    yield custom_hub
    custom_hub.clear_faults()
