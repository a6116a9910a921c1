"""The status API (django-ninja): what this installation is and runs. Superusers only.

Thin: the figures come from one selector (selectors/health.py). The unauthenticated
liveness answer is `/healthz` (models_app/health.py), which says ok or not and nothing more.
"""

from datetime import datetime
from typing import Literal

from ninja import Router, Schema
from pydantic import Field

from . import selectors
from .api_contract import responses

router = Router(tags=["status"])


class ProcessOut(Schema):
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    fresh: bool = Field(description="Beat within the last three heartbeat intervals.")


class LoadedOut(Schema):
    model: str = Field(description="The registry key of the loaded model.")
    host: str
    state: Literal["loading", "ready", "unloading"]


class StatusOut(Schema):
    status: Literal["ok", "unavailable"] = Field(
        description="What /healthz answers: ok when the database answers and a worker beats."
    )
    version: str
    store_path: str
    installed_count: int
    active_models: dict[str, str | None] = Field(
        description="The active model's key for every model type (null: none is active)."
    )
    loaded: list[LoadedOut] = Field(
        description="The models a runtime holds (or is loading) in memory, on every host; "
        "GET /api/v1/runtime has the details."
    )
    workers: list[ProcessOut]
    runtimes: list[ProcessOut]
    free_disk_bytes: int
    disk_total_bytes: int


@router.get("/status", response=responses(StatusOut))
def get_status(request):
    """Return the store, installed and active models, loaded models, process heartbeats,
    free disk and version."""
    return selectors.system_status()
