"""GGUF facts without the download: the header read from the hub by Range requests.

For custom entries at add time, and as a check of the curated registry: where a GGUF
entry's YAML says another context window, quantization or parameter count than the
file's header on the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from .. import hub
from ..errors import ModelyardError
from ..gguf import gguf_facts
from ..registry import load_registry, registry_paths
from .model_facts import HEADER

# The YAML rounds parameter counts ("1.5B"): a difference within this share is agreement.
PARAMETER_TOLERANCE = 0.05


def gguf_remote_facts(*, repo_id: str, commit: str, filename: str) -> dict[str, Any]:
    """Return a hub GGUF file's facts, read by Range requests (a few MB at most).

    Marked as read from this commit's header, so that `model_facts_ensure` keeps them once
    the same file is downloaded.
    """
    header, reader = hub.gguf_header_remote(
        repo_id=repo_id,
        commit=commit,
        filename=filename,
        endpoint=settings.HF_ENDPOINT,
        token=settings.HF_TOKEN,
    )
    return gguf_facts(header) | {
        "source": HEADER,
        "commit_hash": commit,
        "read": "range",
        "range_bytes": reader.fetched,
    }


@dataclass
class GGUFCheck:
    key: str
    repo_id: str
    file: str
    differences: list[str] = field(default_factory=list)
    error: str = ""
    range_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences and not self.error


def registry_gguf_check(*, keys: list[str] | None = None) -> list[GGUFCheck]:
    """Read each curated GGUF entry's header on the hub; say where its YAML disagrees."""
    paths = registry_paths(
        registry_dir=settings.REGISTRY_DIR, extra_files=settings.MODEL_REGISTRY_FILES
    )
    checks = []
    for entry in load_registry(paths):
        if not entry.gguf_file or (keys and entry.key not in keys):
            continue
        check = GGUFCheck(key=entry.key, repo_id=entry.repo_id, file=entry.gguf_file)
        checks.append(check)
        try:
            listing = hub.repo_listing(
                repo_id=entry.repo_id,
                revision=entry.revision,
                endpoint=settings.HF_ENDPOINT,
                token=settings.HF_TOKEN,
            )
            facts = gguf_remote_facts(
                repo_id=entry.repo_id, commit=listing.commit_hash, filename=entry.gguf_file
            )
        except ModelyardError as exc:
            check.error = f"{exc.code}: {exc.message}"
            continue
        check.range_bytes = facts["range_bytes"]
        check.differences = _differences(entry, facts)
    return checks


def _differences(entry, facts: dict[str, Any]) -> list[str]:
    found = []
    context = facts.get("context_length")
    if entry.context_window is not None and context and entry.context_window != context:
        found.append(
            f"context_window: the YAML says {entry.context_window:,}, the header {context:,}"
        )
    quant = facts.get("quantization")
    if entry.quantization and quant and entry.quantization.upper() != quant.upper():
        found.append(f"quantization: the YAML says {entry.quantization}, the header {quant}")
    params = facts.get("parameter_count")
    tolerance = PARAMETER_TOLERANCE * (params or 0)
    if params and entry.parameter_count and abs(entry.parameter_count - params) > tolerance:
        found.append(
            f"parameter_count: the YAML says {entry.parameter_count:,}, the header {params:,}"
        )
    return found
