"""The API of keeping installed models whole and current: verify, repair, update check, update.

Thin like models_app/api.py (whose start response and optional-body helpers these use):
each route calls one service of services/verification.py or services/updates.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ninja import Router, Schema

from . import selectors, services
from .api import _optional_json_body, _start_response
from .api_contract import Bool, Input, ModelKey, responses
from .schemas import StartOut

router = Router(tags=["maintenance"])

STARTS = responses({200: StartOut, 202: StartOut}, 404, 409, 422)


class VerifyIn(Input):
    # Test-load the vocabulary too (llama-cpp-python, vocab_only, in a child process).
    load: Bool = False


_VERIFY_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": VerifyIn.model_json_schema()}},
    }
}


class UpdateFileOut(Schema):
    path: str
    change: Literal["changed", "added", "removed"]


class UpdateCheckOut(Schema):
    model: str
    available: bool
    installed_commit: str
    hub_commit: str | None  # null: the Hub was not asked (the entry is pinned to a commit)
    files: list[UpdateFileOut]
    checked_at: datetime | None
    reason: str


@router.post("/models/{key}/verify", response=STARTS, openapi_extra=_VERIFY_BODY)
def verify_model(request, key: ModelKey):
    """Queue a verify (202): every file hashed again against its recorded digest (no network),
    the GGUF header parsed, the memory fit checked; `{"load": true}` test-loads the
    vocabulary too. The checks land on the model's installation and the operation's result;
    a damaged file fails it with ERR_CHECKSUM. 409 ERR_NOT_INSTALLED when nothing is on disk."""
    options = _optional_json_body(request, VerifyIn)
    model = selectors.model_get(key=key)
    return _start_response(services.verify_start(model=model, load=options.load, user=request.auth))


@router.post("/models/{key}/repair", response=STARTS)
def repair_model(request, key: ModelKey):
    """Queue a repair (202): fetch again only the blobs of the files the last verify found
    damaged, and hash them again. 200 "not_damaged" when there is none."""
    model = selectors.model_get(key=key)
    return _start_response(services.repair_start(model=model, user=request.auth))


@router.post(
    "/models/{key}/update-check", response=responses(UpdateCheckOut, 404, 409, 422, 502, 504)
)
def update_check_model(request, key: ModelKey):
    """Ask the Hub now whether a file this entry uses changed at its revision (runs in the
    request; the schedule does the same every UPDATE_CHECK_INTERVAL). A changed README is no
    update; an entry pinned to a commit never has one and the Hub is not asked."""
    model = selectors.model_get(key=key)
    return services.update_check(model=model).as_dict()


@router.post("/models/{key}/update", response=STARTS)
def update_model(request, key: ModelKey):
    """Queue an update (202): fetch only the changed blobs, switch the revision's ref to the new
    commit atomically, remove the old snapshot and the blobs nothing points at any more."""
    model = selectors.model_get(key=key)
    return _start_response(services.update_start(model=model, user=request.auth))
