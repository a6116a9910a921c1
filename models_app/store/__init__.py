"""The models store on disk: the Hugging Face cache layout, read through huggingface_hub.

`get_store()` returns the one Store adapter; nothing above this package knows a path.
"""

from .adapter import LEGACY, PRIMARY, Store, get_store, repo_folder, store_settings_changed
from .removal import Removal
from .scan import (
    WEIGHT_SUFFIXES,
    PartialFile,
    StoredFile,
    StoredRepo,
    StoredSnapshot,
    StoreReport,
    path_matches,
    pick_snapshot,
)

__all__ = [
    "LEGACY",
    "PRIMARY",
    "WEIGHT_SUFFIXES",
    "PartialFile",
    "Removal",
    "Store",
    "StoreReport",
    "StoredFile",
    "StoredRepo",
    "StoredSnapshot",
    "get_store",
    "path_matches",
    "pick_snapshot",
    "repo_folder",
    "store_settings_changed",
]
