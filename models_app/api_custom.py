"""Custom entries by repo id (django-ninja): inspect a hub repo, add it, remove it.

Thin: services/custom_models.py checks everything against the hub and owns the rows.
Mounted before the models router (config/api.py): `/models/custom...` is not a model key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from ninja import Query, Router, Schema, Status
from pydantic import Field, StringConstraints

from . import selectors
from .api_contract import (
    LINE_PATTERN,
    NAME_PATTERN,
    TEXT_PATTERN,
    Input,
    ModelKey,
    QueryBool,
    omittable,
    responses,
)
from .models import Installation
from .registry import POOLING_MODES
from .schemas import TypeName
from .services import custom_models

router = Router(tags=["custom models"])

# Checked against the hub: an id that is no owner/name is 404, as the hub would answer.
RepoId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=LINE_PATTERN)]
Revision = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=LINE_PATTERN)]
RepoPath = Annotated[str, StringConstraints(min_length=1, max_length=300, pattern=LINE_PATTERN)]
EntryName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN)]
Prefix = Annotated[
    str, StringConstraints(max_length=custom_models.MAX_PREFIX, pattern=LINE_PATTERN)
]
Instruction = Annotated[
    str, StringConstraints(max_length=custom_models.MAX_INSTRUCTION, pattern=TEXT_PATTERN)
]
Dimension = Annotated[int, Field(ge=1, le=custom_models.MAX_DIMENSION)]
Pooling = Literal[POOLING_MODES]  # type: ignore[valid-type]
HUB_ERRORS = (404, 409, 422, 502, 504)


class InspectQuery(Schema):
    repo_id: RepoId
    revision: Revision = "main"


class GGUFFileOut(Schema):
    path: str
    size: int | None
    quantization: str = Field(description="From the file name; the header says it exactly.")
    sha256: str | None


class InspectOut(Schema):
    repo_id: str
    revision: str
    commit_hash: str
    pipeline_tag: str | None
    gated: bool | str
    gguf_files: list[GGUFFileOut] = Field(description="Offered: one entry per chosen file.")
    has_snapshot_weights: bool = Field(description="config.json with safetensors weights.")
    types: list[str] = Field(description="The types that do not contradict the repo.")


class CustomIn(Input):
    repo_id: RepoId
    type: TypeName
    revision: Revision = "main"
    file: RepoPath = omittable()
    files: Annotated[list[RepoPath], Field(max_length=50)] = omittable()
    name: EntryName = omittable()
    dimension: Dimension = omittable()
    pooling: Pooling = omittable()
    query_prefix: Prefix = omittable()
    document_prefix: Prefix = omittable()
    instruction: Instruction = omittable()


class CustomModelOut(Schema):
    key: str
    name: str
    repo_id: str
    revision: str
    type: str
    source: str
    gguf_file: str
    allow_patterns: list[str]
    quantization: str
    parameter_count: int | None
    download_size: int | None
    context_window: int | None
    embedding_dimension: int | None
    pooling: str
    query_prefix: str
    document_prefix: str
    options: dict[str, Any]
    sha256: dict[str, str]
    gguf_facts: dict[str, Any]
    ram_required: int | None
    installed: bool
    added_by: str | None


class CustomAddOut(Schema):
    message: str
    models: list[CustomModelOut]


class CustomRemoveOut(Schema):
    model: str
    removed: bool
    bytes_freed: int
    message: str


def custom_model_payload(model) -> dict[str, Any]:
    """Return a custom entry as the API shows it."""
    computed = {"installed", "added_by"}
    fields = {n: getattr(model, n) for n in CustomModelOut.model_fields if n not in computed}
    return fields | {
        "installed": Installation.objects.filter(model_id=model.pk).exists(),
        "added_by": model.added_by.get_username() if model.added_by_id else None,
    }


@router.get("/models/custom/inspect", response=responses(InspectOut, *HUB_ERRORS))
def inspect_custom(request, query: Query[InspectQuery]):
    """Ask the hub about a repo: its pipeline tag, the GGUF files it offers (sizes,
    quantization) and the types it can be added as. 502 ERR_AUTH for a gated repo the
    token cannot download, with what to do."""
    found = custom_models.custom_repo_inspect(repo_id=query.repo_id, revision=query.revision)
    return found.as_dict()


@router.post("/models/custom", response=responses({201: CustomAddOut}, *HUB_ERRORS))
def add_custom(request, payload: CustomIn):
    """Add a hub repo as custom entries (201), checked against the hub first: one entry per
    chosen GGUF file (its header read by Range requests for the facts), or one snapshot
    entry. 404 unknown repo or file, 502 ERR_AUTH gated, 409 ERR_INCOMPATIBLE a type the
    repo contradicts, 409 ERR_ALREADY_EXISTS a duplicate."""
    models = custom_models.custom_model_add(
        repo_id=payload.repo_id,
        type=payload.type,
        revision=payload.revision,
        file=payload.file,
        files=payload.files,
        name=payload.name,
        dimension=payload.dimension,
        pooling=payload.pooling,
        query_prefix=payload.query_prefix,
        document_prefix=payload.document_prefix,
        instruction=payload.instruction,
        user=request.auth,
    )
    keys = ", ".join(m.key for m in models)
    return Status(
        201,
        {
            "message": f"Added {keys}: not installed yet.",
            "models": [custom_model_payload(m) for m in models],
        },
    )


@router.delete("/models/custom/{key}", response=responses(CustomRemoveOut, 404, 409, 422))
def remove_custom(
    request, key: ModelKey, delete_files: QueryBool = False, confirm: QueryBool = False
):
    """Remove a custom entry, or a local one (an import that failed, or whose files are gone).
    409 ERR_INVALID_STATE while it is installed, unless `delete_files=true`: its files are
    deleted first (409 ERR_CONFIRM_REQUIRED when that delete warns and confirm is not true).
    Curated entries are refused (409)."""
    model = selectors.model_get(key=key)
    done = custom_models.custom_model_remove(
        model=model, user=request.auth, delete_files=delete_files, confirm=confirm
    )
    freed = done["bytes_freed"]
    message = f"Removed {model.key}" + (f"; {freed:,} bytes freed." if freed else ".")
    return done | {"message": message}
