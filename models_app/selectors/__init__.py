"""Reads. One query path feeds the API, the admin, the HTMX page and the CLI.

A package by concern; every read is importable from here.
"""

from .fit import (
    FIT_STATUSES,
    Capacity,
    model_fit,
    model_recommended,
    model_required,
    runtime_capacity,
)
from .health import health_ok, heartbeat_fresh_since, system_status
from .models import (
    LIST_FIELDS,
    SORTS,
    SortKey,
    StatusFilter,
    active_model_list,
    collections_count_subquery,
    memory_table,
    model_get,
    model_list,
    model_objects_page,
    model_page,
    model_queryset,
)
from .operations import (
    active_operation_blobs,
    busy_model_ids,
    current_operations_by_model,
    download_blobs,
    operation_get,
    operation_list,
    store_operation_current,
)
from .runtime import instance_payload, runtime_host_list, runtime_instances, runtime_payload
from .store import (
    cache_summary,
    installed_in_store,
    latest_scan,
    unmanaged_get,
)
from .usage import (
    collection_names_by_model,
    default_embedding_matches,
    model_usage,
    repo_stakeholders,
)

__all__ = [
    "FIT_STATUSES",
    "LIST_FIELDS",
    "SORTS",
    "Capacity",
    "SortKey",
    "StatusFilter",
    "active_model_list",
    "active_operation_blobs",
    "busy_model_ids",
    "cache_summary",
    "collection_names_by_model",
    "collections_count_subquery",
    "current_operations_by_model",
    "default_embedding_matches",
    "download_blobs",
    "health_ok",
    "heartbeat_fresh_since",
    "installed_in_store",
    "instance_payload",
    "latest_scan",
    "memory_table",
    "model_fit",
    "model_get",
    "model_list",
    "model_objects_page",
    "model_page",
    "model_queryset",
    "model_recommended",
    "model_required",
    "model_usage",
    "operation_get",
    "operation_list",
    "repo_stakeholders",
    "runtime_capacity",
    "runtime_host_list",
    "runtime_instances",
    "runtime_payload",
    "store_operation_current",
    "system_status",
    "unmanaged_get",
]
