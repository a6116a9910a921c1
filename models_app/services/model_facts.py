"""A model's GGUF facts and memory requirement, from its installed file's header.

`Model.gguf_facts` holds what runtime/memory.py needs (models_app/gguf.py's facts) with
where they came from: `"source": "header"` and the commit of the file read, or
`"source": "registry"` for the figures a curated entry's YAML gives before it is
installed. `ram_required` is the estimate at RUNTIME_DEFAULT_N_CTX.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from ..errors import FormatError, ModelyardError, NotInstalled
from ..gguf import GGUFHeader, gguf_facts, gguf_header_of
from ..gguf_split import gguf_split_facts
from ..models import Installation, Model
from ..runtime.memory import context_within, memory_estimate
from ..store import get_store

logger = logging.getLogger(__name__)

HEADER, REGISTRY = "header", "registry"


def ram_required_estimate(*, facts: dict[str, Any], file_size: int | None) -> int | None:
    """Return the bytes a runner needs for these facts at the default n_ctx (within the
    model's trained context), or None when the facts do not tell."""
    if not facts:
        return None
    n_ctx = context_within(facts=facts, n_ctx=settings.RUNTIME_DEFAULT_N_CTX)
    try:
        estimate = memory_estimate(facts=facts, n_ctx=n_ctx, file_size=file_size)
    except FormatError:
        return None
    return estimate.total


def model_facts_refresh(*, model: Model) -> dict[str, Any]:
    """Read the installed GGUF's header; store its facts and the ram_required they give.

    A split model's facts are its first shard's with the weights (tensor_bytes,
    parameter_count) of every shard, whose headers are read too.

    Raise NotInstalled when the model has no installed GGUF file, FormatError when its
    header cannot be read (the message names the file, never where the store is).
    """
    installation = Installation.objects.filter(model=model).first()
    if not model.gguf_file or installation is None:
        raise NotInstalled(
            f"{model.key} has no installed GGUF file to read.", details={"model": model.key}
        )
    # A split model: the facts are the first shard's, its weights those of every shard.
    headers = [_header(model, installation, name) for name in model.file_patterns]
    facts = gguf_facts(headers[0])
    if len(headers) > 1:
        try:
            facts = gguf_split_facts(facts, headers)
        except FormatError as exc:
            raise FormatError(
                f"{model.gguf_file} of {model.key}: {exc.message}",
                details={"model": model.key, "file": model.gguf_file, **exc.details},
            ) from None
    facts |= {"source": HEADER, "commit_hash": installation.commit_hash}
    model.gguf_facts = facts
    model.ram_required = ram_required_estimate(facts=facts, file_size=model.download_size)
    model.save(update_fields=["gguf_facts", "ram_required", "updated_at"])
    return facts


def _header(model: Model, installation: Installation, name: str) -> GGUFHeader:
    """Read the header of one installed GGUF file of the model (a shard, or the one file)."""
    store = get_store()
    try:
        path = store.snapshot_file(
            installation.location, model.repo_id, installation.commit_hash, name
        )
        return gguf_header_of(path)
    except ValueError as exc:  # a file name that is no path inside the repo
        raise FormatError(str(exc), details={"model": model.key}) from None
    except OSError as exc:
        raise FormatError(
            f"Cannot read {name} of {model.key}: {store.redact(str(exc))}",
            details={"model": model.key, "file": name},
        ) from None
    except FormatError as exc:
        raise FormatError(
            f"{name} of {model.key}: {exc.message}",
            details={"model": model.key, "file": name, **exc.details},
        ) from None


def model_facts_ensure(*, model: Model, commit_hash: str) -> dict[str, Any] | None:
    """Refresh the facts unless `model.gguf_facts` were read from this commit's file; never raise.

    For the download and reconcile paths: a header that cannot be read is logged and the
    model keeps what it had (ram_required stays unknown), the download or reconcile goes on.
    """
    facts = model.gguf_facts
    if facts and facts.get("source") == HEADER and facts.get("commit_hash") == commit_hash:
        return facts
    try:
        return model_facts_refresh(model=model)
    except ModelyardError as exc:
        logger.warning("GGUF facts of %s not read: %s", model.key, exc.message)
        return None
