"""Writes and state changes. Every interface (API, admin, HTMX, CLI, tasks) calls these.

Running an operation is the engine's (models_app/engine.py), which sits above this package.
"""

from .activation import model_activate
from .cancellation import operation_cancel
from .deletion import delete_start, unmanaged_delete
from .downloads import download_start
from .events import event_record
from .installations import installation_pin, installation_touch
from .operations import (
    StartResult,
    operation_exclusion_check,
    operation_retry,
    operation_start,
    operations_reap,
    operations_requeue,
)
from .pruning import PrunePlan, partials_cleanup, prune_plan, prune_start
from .reconcile import ReconcileResult, store_reconcile
from .registry_sync import SyncResult, registry_sync
from .tokens import (
    api_token_authenticate,
    api_token_create,
    api_token_set_revoked,
    api_token_verify,
)
from .updates import UpdateCheck, update_check, update_checks_due, update_start
from .verification import repair_start, verify_start

__all__ = [
    "PrunePlan",
    "ReconcileResult",
    "StartResult",
    "SyncResult",
    "UpdateCheck",
    "api_token_authenticate",
    "api_token_create",
    "api_token_set_revoked",
    "api_token_verify",
    "delete_start",
    "download_start",
    "event_record",
    "installation_pin",
    "installation_touch",
    "model_activate",
    "operation_cancel",
    "operation_exclusion_check",
    "operation_retry",
    "operation_start",
    "operations_reap",
    "operations_requeue",
    "partials_cleanup",
    "prune_plan",
    "prune_start",
    "registry_sync",
    "repair_start",
    "store_reconcile",
    "unmanaged_delete",
    "update_check",
    "update_checks_due",
    "update_start",
    "verify_start",
]
