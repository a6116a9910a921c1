"""Writes and state changes. Every interface (API, admin, HTMX, CLI, tasks) calls these."""

from .activation import model_activate
from .deletion import delete_start, installation_pin, unmanaged_delete
from .events import event_record
from .installed import ReconcileResult, store_reconcile
from .operations import (
    StartResult,
    download_start,
    operation_cancel,
    operation_retry,
    operation_start,
    operations_reap,
    partials_cleanup,
)
from .pruning import prune_run
from .registry_sync import SyncResult, registry_sync
from .tokens import api_token_authenticate, api_token_create

__all__ = [
    "ReconcileResult",
    "StartResult",
    "SyncResult",
    "api_token_authenticate",
    "api_token_create",
    "delete_start",
    "download_start",
    "event_record",
    "installation_pin",
    "model_activate",
    "operation_cancel",
    "operation_retry",
    "operation_start",
    "operations_reap",
    "partials_cleanup",
    "prune_run",
    "registry_sync",
    "store_reconcile",
    "unmanaged_delete",
]
