"""What a hub repo is, and what it can be added as: its GGUF files, its snapshot files,
the types its pipeline tag and its files allow (services/custom_models.py uses these).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import hub
from ..constants import MODEL_TYPES
from ..errors import Incompatible
from ..gguf import FILE_TYPES, GGML_TYPES
from ..phrasing import type_label, with_article
from ..registry import GGUF_TYPES

# The pipeline tags each type fits; a repo without one contradicts nothing.
PIPELINE_TAGS = {
    "llm": {"text-generation", "text2text-generation", "image-text-to-text", "conversational"},
    "embedding": {"sentence-similarity", "feature-extraction"},
    "reranker": {"text-ranking", "text-classification"},
    "splade": {"fill-mask", "feature-extraction"},
}
# Files a transformers / sentence-transformers snapshot needs besides its weights.
SNAPSHOT_EXTRAS = re.compile(r"^([^/]+\.(json|txt|model)|\d+_[A-Za-z]+/.+)$")
WEIGHTS = re.compile(r"^[^/]+\.safetensors$")
LEGACY_WEIGHTS = re.compile(r"^pytorch_model[^/]*\.bin$")
QUANT_NAMES = {name.upper() for name in FILE_TYPES.values()} | {
    name for name, _, _ in GGML_TYPES.values()
}
QUANT_TOKEN = re.compile(r"^(I?Q\d(_[A-Z0-9]+)*|F16|F32|BF16)$")


@dataclass(frozen=True)
class GGUFChoice:
    path: str
    size: int | None
    quantization: str
    sha256: str | None


@dataclass(frozen=True)
class RepoInspection:
    """What the hub says a repo is, and what it can be added as."""

    repo_id: str
    revision: str
    commit_hash: str
    pipeline_tag: str | None
    gated: str | bool
    gguf_files: list[GGUFChoice]
    has_snapshot_weights: bool
    types: list[str] = field(default_factory=list)  # the types that do not contradict it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantization_of(filename: str) -> str:
    """Return the quantization a GGUF file name says (`...-Q4_K_M.gguf`), or ""."""
    stem = filename.rsplit("/", 1)[-1].removesuffix(".gguf")
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", stem)
    for token in reversed(re.split(r"[-.]", stem)):
        upper = token.upper()
        if upper in QUANT_NAMES or QUANT_TOKEN.match(upper):
            return upper
    return ""


def snapshot_files(listing: hub.RepoListing) -> list[hub.RepoFile]:
    """Return the files a snapshot entry takes: config, tokenizer, modules and one weight format."""
    weights = [f for f in listing.files if WEIGHTS.match(f.path)]
    if not weights:
        weights = [f for f in listing.files if LEGACY_WEIGHTS.match(f.path)]
    extras = [f for f in listing.files if SNAPSHOT_EXTRAS.match(f.path)]
    if not weights or not any(f.path == "config.json" for f in extras):
        return []
    return sorted([*extras, *weights], key=lambda f: f.path)


def fitting_types(listing: hub.RepoListing, gguf_files: list, snapshot: list) -> list[str]:
    tag = listing.pipeline_tag
    types = []
    for type_ in MODEL_TYPES:
        if tag and tag not in PIPELINE_TAGS[type_]:
            continue
        if (gguf_files and type_ in GGUF_TYPES) or (snapshot and type_ != "llm"):
            types.append(type_)
    return types


def inspection_of(listing: hub.RepoListing) -> RepoInspection:
    gguf_files = [
        GGUFChoice(path=f.path, size=f.size, quantization=quantization_of(f.path), sha256=f.sha256)
        for f in listing.files
        if f.path.endswith(".gguf")
    ]
    snapshot = snapshot_files(listing)
    return RepoInspection(
        repo_id=listing.repo_id,
        revision=listing.revision,
        commit_hash=listing.commit_hash,
        pipeline_tag=listing.pipeline_tag,
        gated=listing.gated,
        gguf_files=gguf_files,
        has_snapshot_weights=bool(snapshot),
        types=fitting_types(listing, gguf_files, snapshot),
    )


def type_check(inspection: RepoInspection, type_: str, *, gguf: bool) -> None:
    """Refuse a type the repo's pipeline tag or files contradict (ERR_INCOMPATIBLE)."""
    what = inspection.repo_id
    tag = inspection.pipeline_tag
    if tag and tag not in PIPELINE_TAGS[type_]:
        fits = [type_label(t) for t in MODEL_TYPES if tag in PIPELINE_TAGS[t]]
        hint = f"; it fits {' or '.join(fits)}" if fits else ""
        raise Incompatible(
            f"{what} is tagged {tag!r} on the Hub, which is not {with_article(type_label(type_))} "
            f"model{hint}.",
            details={"pipeline_tag": tag, "type": type_, "types": inspection.types},
        )
    if type_ == "llm" and not inspection.gguf_files:
        raise Incompatible(
            f"{what} has no .gguf file: an LLM entry needs one (the built-in runtime is "
            "llama.cpp). Look for a GGUF conversion of it.",
            details={"type": type_},
        )
    if gguf and type_ not in GGUF_TYPES:
        raise Incompatible(
            f"{with_article(type_label(type_)).capitalize()} model cannot be a GGUF file; "
            "pick a repo with safetensors weights.",
            details={"type": type_},
        )
    if not gguf and not inspection.has_snapshot_weights:
        raise Incompatible(
            f"{what} has no config.json with safetensors (or pytorch_model.bin) weights, "
            f"which {with_article(type_label(type_))} model needs.",
            details={"type": type_},
        )
