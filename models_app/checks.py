"""System checks: settings that would otherwise fail late, in a worker, hours after the start.

`manage.py check` runs them, and so does `manage.py run` before it starts anything
(ModelsAppConfig.ready() registers them). The ids are stable; README.md ("System
checks") lists them.

These read the settings and the disk directly, not through the Store: they judge the
settings the Store is built from, before anything has been built from them.
"""

import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks


def _nearest_existing(path: Path) -> Path:
    """Return path itself or its nearest ancestor that exists (a dangling symlink counts)."""
    probe = path
    while not (probe.exists() or probe.is_symlink()) and probe != probe.parent:
        probe = probe.parent
    return probe


def _writable_dir(path: Path) -> bool:
    # X as well as W: creating an entry in a directory needs both.
    return os.access(path, os.W_OK | os.X_OK)


def check_models_store(app_configs=None, **kwargs):
    """Check that the models store is a writable directory, or can be created (E001)."""
    root = Path(settings.MODELS_HUB_DIR)
    hint = (
        "Point MODELS_DIR at a directory this process may write to (the store is "
        "MODELS_DIR/hub), or create it and give this user write access."
    )
    existing = _nearest_existing(root)
    if existing == root:
        if not root.is_dir():
            problem = f"the models store {root} exists but is not a directory."
        elif not _writable_dir(root):
            problem = f"the models store {root} is not writable."
        else:
            return []
    elif not existing.is_dir():
        problem = f"the models store {root} cannot be created: {existing} is not a directory."
    elif not _writable_dir(existing):
        problem = f"the models store {root} cannot be created: {existing} is not writable."
    else:
        return []
    return [checks.Error(f"MODELS_DIR: {problem}", hint=hint, id="modelyard.E001")]


def check_hf_endpoint(app_configs=None, **kwargs):
    """Check that HF_ENDPOINT is an http(s) URL with a host (E002)."""
    endpoint = settings.HF_ENDPOINT
    try:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # an unbalanced IPv6 bracket, a bad port
        valid = False
    if valid:
        return []
    return [
        checks.Error(
            f"HF_ENDPOINT {endpoint!r} is not an http:// or https:// URL with a host.",
            hint="Set HF_ENDPOINT to the Hub or a mirror, e.g. https://huggingface.co.",
            id="modelyard.E002",
        )
    ]


def _disk_total(root: Path) -> int | None:
    """Return the size of the filesystem that holds (or will hold) the store, if known."""
    try:
        return shutil.disk_usage(_nearest_existing(root)).total
    except OSError:
        return None  # E001 names the path


def check_disk_policy(app_configs=None, **kwargs):
    """Check that the quota and the free-space floors can hold on this disk (E003-E005, W001).

    Consistent means: a quota, when set, is a positive size; the floor prune keeps
    free (MIN_FREE_BYTES) and the room a download must leave (DOWNLOAD_DISK_RESERVE)
    are not negative and smaller than the whole filesystem, so that they can ever be
    met; and the quota plus the floor fit on the filesystem, or else the store can never
    reach its quota (a warning: the disk fills up, or the floor prunes, first).
    """
    issues = []
    quota = settings.MODELS_MAX_BYTES
    floors = {
        "MIN_FREE_BYTES": settings.MIN_FREE_BYTES,
        "DOWNLOAD_DISK_RESERVE": settings.DOWNLOAD_DISK_RESERVE,
    }
    if quota is not None and (not isinstance(quota, int) or quota <= 0):
        issues.append(
            checks.Error(
                f"MODELS_MAX_BYTES is {quota!r}; a quota must be a positive number of bytes.",
                hint="Set MODELS_MAX_BYTES to the store's size limit in bytes, or leave it "
                "unset (or 0) for no quota.",
                id="modelyard.E003",
            )
        )
        quota = None
    for name, value in list(floors.items()):
        if not isinstance(value, int) or value < 0:
            issues.append(
                checks.Error(
                    f"{name} is {value!r}; it must be 0 or a positive number of bytes.",
                    hint=f"Set {name} to the free space to keep, in bytes (0 keeps none).",
                    id="modelyard.E004",
                )
            )
            del floors[name]
    total = _disk_total(Path(settings.MODELS_HUB_DIR))
    if total is None:
        return issues
    for name, value in floors.items():
        if value >= total:
            issues.append(
                checks.Error(
                    f"{name} is {value:,} bytes, but the filesystem of the models store "
                    f"holds {total:,} bytes in all; that much can never be free.",
                    hint=f"Set {name} below the filesystem's size, or move MODELS_DIR to a "
                    "larger disk. With MIN_FREE_BYTES too high every prune removes all it "
                    "may; with DOWNLOAD_DISK_RESERVE too high no download can start.",
                    id="modelyard.E005",
                )
            )
    min_free = floors.get("MIN_FREE_BYTES", 0)
    if quota is not None and min_free < total and quota + min_free > total:
        issues.append(
            checks.Warning(
                f"MODELS_MAX_BYTES ({quota:,}) plus MIN_FREE_BYTES ({min_free:,}) is more "
                f"than the filesystem of the models store holds ({total:,} bytes).",
                hint="The store can never reach its quota: the disk fills up, or the "
                "MIN_FREE_BYTES floor starts pruning, first. Lower MODELS_MAX_BYTES to at most "
                "the filesystem's size minus MIN_FREE_BYTES.",
                id="modelyard.W001",
            )
        )
    return issues


def check_task_timeout(app_configs=None, **kwargs):
    """Check that django-q2's task timeout is below its retry (E006)."""
    conf = settings.Q_CLUSTER
    # django-q2's own defaults: no timeout, retry after 60 seconds.
    timeout, retry = conf.get("timeout"), conf.get("retry", 60)
    if isinstance(timeout, int | float) and isinstance(retry, int | float) and timeout < retry:
        return []
    return [
        checks.Error(
            f"Q_CLUSTER timeout ({timeout!r} s) is not below its retry ({retry!r} s): the "
            "broker would hand a download that is still running to a second worker.",
            hint="Set Q_TASK_TIMEOUT (retry follows it, an hour longer); if you set "
            "Q_CLUSTER yourself, give it a timeout smaller than its retry.",
            id="modelyard.E006",
        )
    ]


def check_file_roots(app_configs=None, **kwargs):
    """Check IMPORT_ROOTS and EXPORT_ROOTS: absolute existing directories (E007), export
    roots writable (E008), none inside the models store (W002)."""
    issues = []
    store = Path(settings.MODELS_DIR).resolve()
    for setting in ("IMPORT_ROOTS", "EXPORT_ROOTS"):
        for root in getattr(settings, setting, []):
            root = Path(root)
            if not root.is_absolute() or not root.is_dir():
                problem = (
                    "is not an absolute path"
                    if not root.is_absolute()
                    else ("does not exist" if not root.exists() else "is not a directory")
                )
                issues.append(
                    checks.Error(
                        f"{setting}: {root} {problem}.",
                        hint=f"List absolute paths of existing directories in {setting}, "
                        "comma-separated; leave it empty to turn the feature off.",
                        id="modelyard.E007",
                    )
                )
                continue
            if setting == "EXPORT_ROOTS" and not _writable_dir(root):
                issues.append(
                    checks.Error(
                        f"EXPORT_ROOTS: {root} is not writable: no export could be written.",
                        hint="Give this user write access to it, or remove it from EXPORT_ROOTS.",
                        id="modelyard.E008",
                    )
                )
            resolved = root.resolve()
            if (
                resolved == store
                or resolved.is_relative_to(store)
                or store.is_relative_to(resolved)
            ):
                issues.append(
                    checks.Warning(
                        f"{setting}: {root} overlaps the models store ({store}).",
                        hint="Imports would read, and exports write, the store's own files: "
                        "use a directory outside MODELS_DIR.",
                        id="modelyard.W002",
                    )
                )
    return issues
