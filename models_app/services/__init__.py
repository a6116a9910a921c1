"""Writes and state changes. Every interface (API, admin, HTMX, CLI, tasks) calls these."""

from .activation import model_activate
from .events import event_record
from .installed import ReconcileResult, store_reconcile
from .registry_sync import SyncResult, registry_sync
from .tokens import api_token_authenticate, api_token_create

__all__ = [
    "ReconcileResult",
    "SyncResult",
    "api_token_authenticate",
    "api_token_create",
    "event_record",
    "model_activate",
    "registry_sync",
    "store_reconcile",
]
