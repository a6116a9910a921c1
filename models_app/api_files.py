"""The files API (django-ninja): import a local file or folder, export a model. Superusers only.

Thin: both are operations started by services/imports.py and services/exports.py; the
path rules (IMPORT_ROOTS, EXPORT_ROOTS) are the Store's (models_app/store/local.py).
"""

from __future__ import annotations

from typing import Annotated, Literal

from ninja import Router, Status
from pydantic import Field, StringConstraints

from . import selectors
from .api_contract import LINE_PATTERN, NAME_PATTERN, Input, ModelKey, omittable, responses
from .schemas import StartOut, TypeName
from .services.exports import export_start
from .services.imports import import_start

router = Router(tags=["files"])

LocalPathText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=4096, pattern=LINE_PATTERN),
    Field(description="Absolute, or relative to the first root; no '..' components."),
]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN)]


class ImportIn(Input):
    path: LocalPathText
    type: TypeName
    name: ModelName
    key: ModelKey = omittable()
    mode: Literal["copy", "hardlink", "symlink", "move"] = "copy"


class ExportIn(Input):
    dest: LocalPathText
    mode: Literal["copy", "hardlink", "symlink"] = "copy"


def _start_response(result) -> Status:
    return Status(
        result.http_status,
        {"status": result.status, "message": result.message, "operation": result.operation},
    )


@router.post("/models/import", response=responses({200: StartOut, 202: StartOut}, 404, 409, 422))
def import_model(request, payload: ImportIn):
    """Import a GGUF file or a model folder under IMPORT_ROOTS as a new local entry (202).

    403 for a path outside IMPORT_ROOTS or a symlink leading out of one, 422 for '..', a
    FIFO, device or socket, 409 ERR_FORMAT for what is neither a GGUF nor a model folder;
    403 too when IMPORT_ROOTS is empty (import is off).
    """
    result = import_start(
        path=payload.path,
        type=payload.type,
        name=payload.name,
        key=payload.key,
        mode=payload.mode,
        user=request.auth,
    )
    return _start_response(result)


@router.post(
    "/models/{key}/export", response=responses({200: StartOut, 202: StartOut}, 404, 409, 422)
)
def export_model(request, key: ModelKey, payload: ExportIn):
    """Export an installed model's files and a manifest into a new directory (202).

    409 ERR_ALREADY_EXISTS when the directory exists, ERR_NOT_INSTALLED when the model is
    not installed; 403 outside EXPORT_ROOTS, or when EXPORT_ROOTS is empty (export is off).
    """
    model = selectors.model_get(key=key)
    result = export_start(model=model, dest=payload.dest, mode=payload.mode, user=request.auth)
    return _start_response(result)
