"""Store reads: the cache figures of the last reconcile, unmanaged repos."""

from __future__ import annotations

from ..errors import NotFound
from ..models import Installation, StoreScan, UnmanagedRepo
from ..store import get_store


def latest_scan() -> StoreScan | None:
    return StoreScan.objects.order_by("-scanned_at", "-id").first()


def cache_summary() -> dict:
    """Return the store figures from the last reconcile plus the free disk right now.

    Free disk is one statvfs call; nothing here walks the store.
    """
    scan = latest_scan()
    store = get_store()
    total_disk, free_disk = store.disk_usage()
    installed = Installation.objects.all()
    return {
        "store_path": str(store.hub_dir),
        "scanned_at": scan.scanned_at if scan else None,
        "total_bytes": scan.total_bytes if scan else 0,
        "managed_bytes": scan.managed_bytes if scan else 0,
        "unmanaged_bytes": scan.unmanaged_bytes if scan else 0,
        "unmanaged_count": scan.unmanaged_count if scan else 0,
        "partial_bytes": scan.partial_bytes if scan else 0,
        "partial_count": len(scan.partial_files) if scan else 0,
        "installed_count": installed.count(),
        "free_disk_bytes": free_disk,
        "disk_total_bytes": total_disk,
        "warnings": scan.warnings if scan else [],
        "unmanaged_repos": list(UnmanagedRepo.objects.all()),
        "quota_bytes": store.quota_bytes,
        "quota_remaining_bytes": (
            store.quota_bytes - (scan.total_bytes if scan else 0) if store.quota_bytes else None
        ),
        "min_free_bytes": store.min_free_bytes,
    }


def installed_in_store(*, model) -> bool:
    """Return True if the model is installed in the models store (not only the legacy cache)."""
    return Installation.objects.filter(model=model, location="primary").exists()


def unmanaged_get(*, repo_pk: int) -> UnmanagedRepo:
    try:
        return UnmanagedRepo.objects.get(pk=repo_pk)
    except UnmanagedRepo.DoesNotExist:
        raise NotFound(f"No unmanaged repo #{repo_pk}.", details={"repo": repo_pk}) from None
