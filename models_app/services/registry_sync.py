"""Registry sync: the curated YAML files into Model rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import ProtectedError

from ..models import EventKind, Installation, Model, ModelSource
from ..registry import load_registry, registry_paths
from .events import event_record
from .model_facts import HEADER, ram_required_estimate


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # Curated keys a custom or imported entry already holds: that entry stays as it is.
    conflicts: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.retired)} no longer curated, "
            f"{len(self.removed)} removed"
        )
        if self.conflicts:
            text += f", {len(self.conflicts)} skipped (key held by a custom entry)"
        return text


def registry_sync(*, paths: list[Path] | None = None) -> SyncResult:
    """Upsert the curated registry into the database; idempotent.

    Curated entries that left the YAML files are deleted, unless installed or used
    by a collection: those stay, marked no longer in the registry. Custom entries
    are never touched. The files are validated completely before any write.
    """
    if paths is None:
        paths = registry_paths(
            registry_dir=settings.REGISTRY_DIR, extra_files=settings.MODEL_REGISTRY_FILES
        )
    entries = load_registry(paths)
    result = SyncResult()
    wanted = {e.key: e for e in entries}
    with transaction.atomic():
        existing = {m.key: m for m in Model.objects.filter(key__in=wanted)}
        for key, entry in wanted.items():
            values = entry.model_fields_for_db() | {
                "source": ModelSource.CURATED,
                "in_registry": True,
                "registry_file": _relative_to_project(entry.registry_file),
            }
            if values["ram_required"] is None:
                values["ram_required"] = ram_required_estimate(
                    facts=values["gguf_facts"], file_size=values["download_size"]
                )
            row = existing.get(key)
            if row is not None and row.source != ModelSource.CURATED:
                result.conflicts.append(key)
                continue
            if row is not None and (row.gguf_facts or {}).get("source") == HEADER:
                # The installed file's header said more than the YAML can: keep what it said.
                del values["gguf_facts"], values["ram_required"]
            if row is None:
                Model.objects.create(key=key, **values)
                result.created.append(key)
                continue
            changed = [name for name, value in values.items() if getattr(row, name) != value]
            if changed:
                for name in changed:
                    setattr(row, name, values[name])
                row.save(update_fields=[*changed, "updated_at"])
                result.updated.append(key)
            else:
                result.unchanged.append(key)

        gone = Model.objects.filter(source=ModelSource.CURATED, in_registry=True).exclude(
            key__in=wanted
        )
        for row in gone:
            if Installation.objects.filter(model=row).exists() or row.collections.exists():
                row.in_registry = False
                row.save(update_fields=["in_registry", "updated_at"])
                result.retired.append(row.key)
                continue
            try:
                with transaction.atomic():
                    row.delete()
                result.removed.append(row.key)
            except ProtectedError:
                row.in_registry = False
                row.save(update_fields=["in_registry", "updated_at"])
                result.retired.append(row.key)
        if result.created or result.updated or result.retired or result.removed or result.conflicts:
            event_record(
                kind=EventKind.SYNCED,
                message=f"Registry synced: {result.summary()}.",
                files=[str(p) for p in paths],
                created=result.created,
                updated=result.updated,
                retired=result.retired,
                removed=result.removed,
                conflicts=result.conflicts,
            )
    return result


def _relative_to_project(path: str) -> str:
    """Return a registry file path relative to the project, so it does not depend on the cwd."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(settings.BASE_DIR).as_posix()
    except ValueError:
        return str(resolved)
