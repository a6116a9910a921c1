"""What the runtime can run and where: the runnable rule, the hosts, paths, estimates."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from ...errors import (
    FormatError,
    Incompatible,
    InvalidInput,
    NotInstalled,
    Unavailable,
)
from ...gguf import gguf_facts, gguf_header_of
from ...models import (
    Installation,
    Model,
    ModelType,
    ProcessHeartbeat,
    ProcessRole,
)
from ...phrasing import type_label, with_article
from ...runtime.memory import memory_estimate
from ...runtime.processes import ring
from ...store import get_store

logger = logging.getLogger(__name__)


# The model types the built-in runtime serves (GGUF files only).
RUNNABLE_TYPES = (ModelType.LLM, ModelType.EMBEDDING, ModelType.RERANKER)
# Types whose runner is started for embeddings rather than generation.
EMBEDDING_TYPES = (ModelType.EMBEDDING, ModelType.RERANKER)
# A request counted in flight for longer than this no longer protects its instance from
# eviction and expiry (its web process died without ending it).
IN_FLIGHT_LEASE = timedelta(minutes=30)


# --- what may run where -----------------------------------------------------------------


def runtime_check_runnable(model: Model) -> None:
    """Raise unless the built-in runtime can run this entry (a GGUF file of a runnable type)."""
    if not model.gguf_file or model.type not in RUNNABLE_TYPES:
        raise FormatError(
            f"{model.key} is {with_article(type_label(model.type))} entry in safetensors "
            "format, for use from other tools through the models store "
            "(sentence-transformers, transformers); the built-in runtime runs GGUF models only.",
            details={"model": model.key, "format": "safetensors"},
        )


def runtime_hosts(*, fresh_within: float | None = None) -> list[ProcessHeartbeat]:
    """Return the runtime supervisors whose heartbeat is fresh, most capacious first."""
    within = fresh_within or 3 * settings.PROCESS_HEARTBEAT_INTERVAL
    rows = ProcessHeartbeat.objects.filter(
        role=ProcessRole.RUNTIME, beat_at__gte=timezone.now() - timedelta(seconds=within)
    )
    return sorted(rows, key=lambda hb: -int(hb.facts.get("ram_available") or 0))


def _host_for(*, host: str | None) -> ProcessHeartbeat:
    hosts = runtime_hosts()
    if host:
        hosts = [hb for hb in hosts if hb.host == host]
        if not hosts:
            raise Unavailable(
                f"No runtime supervisor is running on {host}.", details={"host": host}
            )
    if not hosts:
        raise Unavailable(
            "No runtime supervisor is running: start `manage.py runtime` "
            "(`manage.py run` starts one unless RUNTIME_ENABLED is false)."
        )
    return hosts[0]


def _model_path(model: Model) -> str:
    installation = Installation.objects.filter(model=model).first()
    if installation is None:
        raise NotInstalled(
            f"{model.key} is not installed; download it before loading it.",
            details={"model": model.key},
        )
    # A split model loads by its first shard: llama.cpp opens the others beside it.
    paths = []
    for name in model.file_patterns:
        try:
            path = get_store().snapshot_file(
                installation.location, model.repo_id, installation.commit_hash, name
            )
        except ValueError:
            path = None
        if path is None or not path.is_file():
            raise NotInstalled(
                f"{model.key}'s file {name} is missing from the store; download it again.",
                details={"model": model.key, "file": name},
            )
        paths.append(path)
    return str(paths[0])


def runtime_estimate(*, model: Model, n_ctx: int, path: str | None = None) -> int:
    """Return the memory a load of this model at n_ctx needs, in bytes (the header's facts)."""
    facts = model.gguf_facts or {}
    if not facts and path is not None:
        facts = gguf_facts(gguf_header_of(path))
    return memory_estimate(facts=facts, n_ctx=n_ctx, file_size=model.download_size).total


def _keep_alive(value: int | None) -> int:
    if value is None:
        return settings.RUNTIME_KEEP_ALIVE
    if value < -1:
        raise InvalidInput("keep_alive is seconds, -1 (forever) or 0 (unload after the request).")
    return value


def _n_ctx(model: Model, n_ctx: int | None) -> int:
    """Return the context a load uses: as asked, else the default (at most the model's own)."""
    trained = model.context_window or (model.gguf_facts or {}).get("context_length")
    if n_ctx is None:
        return min(settings.RUNTIME_DEFAULT_N_CTX, trained or settings.RUNTIME_DEFAULT_N_CTX)
    if trained and n_ctx > trained:
        raise Incompatible(
            f"n_ctx {n_ctx} is more than {model.key} was trained for ({trained}).",
            details={"model": model.key, "n_ctx": n_ctx, "context_window": trained},
        )
    return n_ctx


def _expiry(keep_alive: int, now=None):
    if keep_alive < 0:
        return None
    return (now or timezone.now()) + timedelta(seconds=keep_alive)


def runtime_host_ring(*, host: str) -> None:
    """Wake the runtime supervisor of `host` now (it would look within its poll interval)."""
    for beat in ProcessHeartbeat.objects.filter(role=ProcessRole.RUNTIME, host=host):
        facts = beat.facts or {}
        if facts.get("doorbell"):
            ring(facts.get("address") or "127.0.0.1", int(facts["doorbell"]))
