"""API shapes (ninja schemas) for models, cache and active models."""

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema
from pydantic import BaseModel

from .api_contract import Bool, Input, ModelKey
from .constants import MODEL_TYPES
from .selectors.fit import FIT_STATUSES

TypeName = Literal[MODEL_TYPES]
FitStatus = Literal[FIT_STATUSES]


class InstallationOut(Schema):
    location: str
    commit_hash: str
    size_on_disk: int
    files: list[str]
    installed_at: datetime
    verified_at: datetime | None
    last_used_at: datetime | None
    use_count: int
    pinned: bool
    reconciled_at: datetime
    # The last verify's checks ({name, passed, message}) and the files it found damaged.
    verify_checks: list[dict[str, Any]]
    damaged_files: list[str]
    # The last update check: the Hub's commit and the entry's files it changes, when any.
    update_checked_at: datetime | None
    update_commit: str
    update_files: list[dict[str, Any]]


class HardwareFitOut(BaseModel):
    """Whether the model fits the runtime's memory at n_ctx (selectors.fit.model_fit).

    status: fits (at most 80% of the capacity), tight, does_not_fit, unknown (nothing
    tells what it needs), not_runnable (no GGUF file: the built-in runtime runs none).
    """

    status: FitStatus
    required: int | None
    capacity: int
    n_ctx: int


class ModelFields(BaseModel):
    """The list columns. A plain pydantic model: list rows are dicts, not ORM objects."""

    key: str
    repo_id: str
    revision: str
    type: str
    name: str
    description: str
    family: str
    parameter_count: int | None
    quantization: str
    download_size: int | None
    recommended: bool
    tags: list[str]
    source: str
    in_registry: bool
    installed: bool
    size_on_disk: int | None
    is_active: bool
    collections_count: int
    # A GGUF file: the built-in runtime can load it. Others are for use from other tools.
    runnable: bool
    hardware_fit: HardwareFitOut


class MemoryRow(Schema):
    quantization: str
    bytes: int


class ModelListItem(ModelFields):
    pass


class ModelDetail(Schema, ModelFields):
    @staticmethod
    def resolve_installed(obj) -> bool:
        return _installation(obj) is not None

    @staticmethod
    def resolve_size_on_disk(obj) -> int | None:
        inst = _installation(obj)
        return inst.size_on_disk if inst else None

    @staticmethod
    def resolve_runnable(obj) -> bool:
        return bool(obj.gguf_file)

    gguf_file: str
    allow_patterns: list[str]
    context_window: int | None
    embedding_dimension: int | None
    pooling: str
    query_prefix: str
    document_prefix: str
    memory_estimates: dict[str, int | None]
    memory_table: list[MemoryRow]
    ram_required: int | None
    # The GGUF header's facts (architecture, block_count, head counts, ...), or {}.
    gguf_facts: dict[str, Any]
    sha256: dict[str, str]
    license: str
    registry_file: str
    installation: InstallationOut | None = None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_installation(obj):
        return _installation(obj)

    @staticmethod
    def resolve_memory_table(obj):
        from .selectors import memory_table

        return memory_table(obj)


def _installation(obj):
    try:
        return obj.installation
    except AttributeError:  # RelatedObjectDoesNotExist subclasses AttributeError
        return None


class ModelPage(Schema):
    count: int
    page: int
    page_size: int
    pages: int
    items: list[ModelListItem]


class ActiveModelOut(Schema):
    type: str
    model: str = Field(..., alias="model.key")
    name: str = Field(..., alias="model.name")
    activated_at: datetime


class ActivateIn(Input):
    type: TypeName
    model: ModelKey


class UnmanagedRepoOut(Schema):
    id: int
    repo_id: str
    repo_type: str
    location: str
    size_on_disk: int
    revisions: list[str]
    last_modified: datetime | None


class CacheOut(Schema):
    store_path: str
    scanned_at: datetime | None
    total_bytes: int
    managed_bytes: int
    unmanaged_bytes: int
    unmanaged_count: int
    partial_bytes: int
    partial_count: int
    installed_count: int
    free_disk_bytes: int
    disk_total_bytes: int
    warnings: list[str]
    unmanaged_repos: list[UnmanagedRepoOut]
    quota_bytes: int | None
    quota_remaining_bytes: int | None
    min_free_bytes: int


class ReconcileOut(Schema):
    installed: list[str]
    uninstalled: list[str]
    unmanaged: list[str]
    partial_files: int
    warnings: list[str]


class OperationOut(Schema):
    id: int
    model: str | None  # the model's key; null for a store-wide operation (prune)
    parent: int | None = Field(None, alias="parent_id")  # the prune a delete was part of
    kind: str
    state: str
    bytes_done: int
    bytes_total: int | None
    percent: float | None
    speed: float | None
    eta_seconds: int | None
    error_code: str
    error_message: str
    cancel_requested: bool
    attempts: int
    commit_hash: str
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    result: dict  # the figures of its end: bytes freed, models removed, ...

    @staticmethod
    def resolve_model(obj) -> str | None:
        return obj.model.key if obj.model_id else None

    @staticmethod
    def resolve_percent(obj) -> float | None:
        if not obj.bytes_total:
            return None
        return round(100 * obj.bytes_done / obj.bytes_total, 1)


class StartOut(Schema):
    status: str  # "queued" (202), "active" (200: the one already running), "installed" (200)
    message: str
    operation: OperationOut | None


class OperationPage(Schema):
    count: int
    items: list[OperationOut]


class UsageOut(Schema):
    model: str
    installed: bool
    location: str | None
    size_on_disk: int
    bytes_freed: int
    partial_bytes: int
    blocked_by_collections: list[str]
    user_preferences_count: int
    llm_config_count: int
    llm_configs: list[str]
    is_default_embedding_model: bool
    is_active: bool
    loaded_in_runtime: bool
    warnings: list[str]
    can_delete: bool
    requires_confirmation: bool


class PruneItemOut(Schema):
    model: str
    name: str
    bytes: int
    last_used: str | None
    reason: str


class PruneIn(Input):
    dry_run: Bool = True


class PruneOut(Schema):
    dry_run: bool
    # "planned" (dry run), "queued" (202), "active" (the prune already queued or running),
    # "nothing_to_prune"
    status: str
    operation: OperationOut | None = None
    total_bytes: int
    free_bytes: int
    quota: int | None
    min_free: int
    need_bytes: int
    bytes_to_free: int
    enough: bool
    removals: list[PruneItemOut]
    skipped: list[PruneItemOut]
    partial_files: list[str]


class PinIn(Input):
    pinned: Bool


class PinOut(Schema):
    model: str
    pinned: bool


class CancelIn(Input):
    # A download's partial files go too, instead of staying for a retry to resume.
    discard_partial: Bool = False


class UnmanagedDeleteOut(Schema):
    repo_id: str
    bytes_freed: int


class CapacityOut(Schema):
    bytes: int  # what the runtime of that host may use for models
    host: str
    source: str  # "runtime" (a supervisor's heartbeat) or "this host" (none runs)
    ram_total: int
    ram_available: int
    budget: int | None


class RecommendedOut(Schema):
    model: ModelDetail
    reason: str
    required: int  # bytes at n_ctx
    usable: int  # available RAM less the reserve, within the budget
    n_ctx: int
    capacity: CapacityOut
