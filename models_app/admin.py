"""Admin for the registry, installed state, operations, the runtime, events and API tokens.

Actions call the same services as the API; nothing here writes a row a service owns.
"""

from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.utils.html import format_html

from . import selectors, services
from .admin_actions import LEVELS, each_through_service
from .admin_custom import CustomEntryAdminMixin
from .admin_files import FilesAdminMixin
from .admin_maintenance import MaintenanceAdminMixin
from .models import (
    ActiveModel,
    ApiToken,
    Event,
    Installation,
    Model,
    Operation,
    RuntimeInstance,
    StoreScan,
)
from .phrasing import type_label
from .services import runtime as runtime_services
from .services.custom_models import REMOVABLE_SOURCES


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by services: visible, never edited by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class InstalledFilter(admin.SimpleListFilter):
    title = "installed"
    parameter_name = "installed"

    def lookups(self, request, model_admin):
        return [("yes", "Installed"), ("no", "Available")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(installation__isnull=False)
        if self.value() == "no":
            return queryset.filter(installation__isnull=True)
        return queryset


@admin.register(Model)
class ModelAdmin(MaintenanceAdminMixin, FilesAdminMixin, CustomEntryAdminMixin, admin.ModelAdmin):
    list_display = [
        "name",
        "key",
        "type",
        "quantization",
        "download_size_display",
        "installed_display",
        "size_on_disk_display",
        "used_by",
        "active_display",
        "recommended",
        "source",
        "added_by",
    ]
    list_filter = ["type", InstalledFilter, "source", "recommended", "in_registry"]
    search_fields = ["name", "key", "repo_id", "family", "description"]
    readonly_fields = ["source", "in_registry", "registry_file", "created_at", "updated_at"]
    # What the hub check decided for a custom entry: changed only by adding it again.
    custom_readonly_fields = [
        "key", "repo_id", "revision", "gguf_file", "allow_patterns", "sha256", "gguf_facts",
        "download_size", "added_by",
    ]  # fmt: skip
    actions = [
        "download_selected", "delete_files", "activate_selected", "reconcile_store", "prune_store",
        "verify_selected", "repair_selected", "update_check_selected", "update_selected",
        "export_selected",
    ]  # fmt: skip
    list_per_page = 50

    def get_queryset(self, request):
        return selectors.model_queryset()

    def get_readonly_fields(self, request, obj=None):
        # Curated entries come from YAML; a hand edit would be undone by the next sync.
        if obj is not None and obj.source == "curated":
            return [f.name for f in Model._meta.fields]
        if obj is not None and obj.source == "custom":
            return [*self.readonly_fields, *self.custom_readonly_fields]
        return self.readonly_fields

    @admin.display(description="download size", ordering="download_size")
    def download_size_display(self, obj):
        return filesizeformat(obj.download_size) if obj.download_size else "—"

    @admin.display(description="installed", boolean=True, ordering="installation__installed_at")
    def installed_display(self, obj):
        return hasattr(obj, "installation")

    @admin.display(description="on disk", ordering="installation__size_on_disk")
    def size_on_disk_display(self, obj):
        inst = getattr(obj, "installation", None)
        return filesizeformat(inst.size_on_disk) if inst else "—"

    @admin.display(description="used by", ordering="collections_count")
    def used_by(self, obj):
        n = obj.collections_count
        return f"{n} collection{'s' if n != 1 else ''}" if n else "—"

    @admin.display(description="active", boolean=True, ordering="is_active")
    def active_display(self, obj):
        return obj.is_active

    @admin.action(description="Download selected models")
    def download_selected(self, request, queryset):
        each_through_service(
            self, request, queryset,
            verb="download",
            call=lambda m: services.download_start(model=m, user=request.user),
            key=lambda m: m.key,
            label=lambda m: m.name,
        )  # fmt: skip

    @admin.action(description="Delete downloaded files…")
    def delete_files(self, request, queryset):
        """Show the usage preflight first; delete only after the confirmation posts back."""
        if request.POST.get("confirm") != "yes":
            rows = [
                {"model": m.key, "name": m.name, "usage": selectors.model_usage(model=m)}
                for m in queryset
            ]
            return TemplateResponse(
                request,
                "admin/models_app/model/delete_files_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.model._meta,
                    "queryset": queryset,
                    "rows": rows,
                    "any_warnings": any(r["usage"]["warnings"] for r in rows),
                    "title": "Delete downloaded files",
                },
            )
        each_through_service(
            self, request, queryset,
            verb="delete",
            call=lambda m: services.delete_start(model=m, confirm=True, user=request.user),
            key=lambda m: m.key,
            label=lambda m: m.name,
        )  # fmt: skip
        return None

    @admin.action(description="Prune the store (shows what it would remove first)")
    def prune_store(self, request, queryset):
        """The selection does not matter: prune looks at the whole store."""
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                "admin/models_app/model/prune_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.model._meta,
                    "queryset": queryset,
                    "plan": services.prune_plan(),
                    "title": "Prune the models store",
                },
            )
        result, _ = services.prune_start(user=request.user)
        level, text = result.toast("the models store")
        if result.operation is not None:
            text += " The Operations list shows it and each delete it makes."
        self.message_user(request, text, LEVELS[level])
        return None

    def get_actions(self, request):
        # Django's bulk delete would remove rows behind the usage preflight's back.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        # Only a custom or local entry with nothing on disk may lose its registry row.
        if obj is None:
            return super().has_delete_permission(request)
        return obj.source in REMOVABLE_SOURCES and not hasattr(obj, "installation")

    @admin.action(description="Make active for its type")
    def activate_selected(self, request, queryset):
        each_through_service(
            self, request, queryset,
            verb="activate",
            call=lambda m: services.model_activate(model=m, user=request.user),
            key=lambda m: m.key,
            done=lambda m, _: f"{m.name} is now the active {type_label(m.type)} model.",
        )  # fmt: skip

    @admin.action(description="Reconcile installed state with the store")
    def reconcile_store(self, request, queryset):
        result = services.store_reconcile()
        self.message_user(request, f"Store reconciled: {result.summary()}.")


@admin.register(Installation)
class InstallationAdmin(ReadOnlyAdmin):
    list_display = [
        "model",
        "location",
        "short_commit",
        "size",
        "installed_at",
        "last_used_at",
        "pinned",
    ]
    list_filter = ["location", "pinned"]
    search_fields = ["model__key", "model__name", "model__repo_id"]
    list_select_related = ["model"]
    actions = ["pin_selected", "unpin_selected"]

    def has_change_permission(self, request, obj=None):
        # Actions need change permission; the change form itself stays read-only.
        return obj is None and request.user.is_superuser

    @admin.action(description="Pin (prune never removes them)")
    def pin_selected(self, request, queryset):
        self._pin(request, queryset, pinned=True)

    @admin.action(description="Unpin")
    def unpin_selected(self, request, queryset):
        self._pin(request, queryset, pinned=False)

    def _pin(self, request, queryset, *, pinned: bool):
        each_through_service(
            self, request, queryset.select_related("model"),
            verb="pin" if pinned else "unpin",
            call=lambda i: services.installation_pin(
                model=i.model, pinned=pinned, user=request.user
            ),
            key=lambda i: i.model.key,
            done=lambda i, _: f"{i.model.key} {'pinned' if pinned else 'unpinned'}.",
        )  # fmt: skip

    @admin.display(description="commit")
    def short_commit(self, obj):
        return obj.commit_hash[:10]

    @admin.display(description="size", ordering="size_on_disk")
    def size(self, obj):
        return filesizeformat(obj.size_on_disk)


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = [
        "target", "kind", "state", "progress", "error_code", "parent", "created_at", "finished_at",
    ]  # fmt: skip
    actions = ["cancel_selected", "cancel_discard_selected", "retry_selected"]

    def _each(self, request, queryset, service, verb: str):
        each_through_service(
            self, request, queryset.select_related("model"),
            verb=verb,
            call=lambda op: service(operation=op, user=request.user),
            key=lambda op: f"#{op.pk}",
            done=lambda _, op: f"#{op.pk} {op.target}: {op.state}.",
        )  # fmt: skip

    @admin.action(description="Cancel selected operations (partial files stay)")
    def cancel_selected(self, request, queryset):
        self._each(request, queryset, services.operation_cancel, "cancel")

    @admin.action(description="Cancel selected downloads and discard their partial files")
    def cancel_discard_selected(self, request, queryset):
        def done(_, op) -> str:
            if op.is_active:
                return f"#{op.pk} {op.target}: stopping; its partial files go when it stops."
            freed = filesizeformat(op.result.get("partial_bytes_discarded", 0))
            return f"#{op.pk} {op.target}: {op.state}; partial files discarded ({freed})."

        each_through_service(
            self, request, queryset.select_related("model"),
            verb="cancel and discard",
            call=lambda op: services.operation_cancel(
                operation=op, user=request.user, discard_partial=True
            ),
            key=lambda op: f"#{op.pk}",
            done=done,
        )  # fmt: skip

    @admin.action(description="Retry selected operations (resumes from partial files)")
    def retry_selected(self, request, queryset):
        self._each(request, queryset, services.operation_retry, "retry")

    def has_change_permission(self, request, obj=None):
        # Actions need change permission; the change form itself stays read-only.
        return obj is None and request.user.is_superuser

    list_filter = ["kind", "state", "error_code"]
    search_fields = ["model__key", "model__name", "task_id"]
    list_select_related = ["model", "parent"]

    @admin.display(description="target", ordering="model__key")
    def target(self, obj):
        return obj.target

    @admin.display(description="progress")
    def progress(self, obj):
        # data-operation-id lets the change list's script (change_list.html) move the
        # figures of running operations live.
        if not obj.bytes_total:
            text = "—"
        else:
            percent = 100 * obj.bytes_done / obj.bytes_total
            text = f"{percent:.0f}% ({filesizeformat(obj.bytes_done)} of "
            text += f"{filesizeformat(obj.bytes_total)})"
        return format_html(
            '<span class="op-progress" data-operation-id="{}" data-state="{}">{}</span>',
            obj.pk,
            obj.state,
            text,
        )


@admin.register(RuntimeInstance)
class RuntimeInstanceAdmin(ReadOnlyAdmin):
    """What the runtime has loaded where; rows are the runtime's own, unloaded by its service."""

    list_display = [
        "model", "host", "state", "memory_estimate_display", "rss_display", "n_ctx",
        "n_threads", "expires_display", "requests_served", "in_flight", "error_code",
    ]  # fmt: skip
    list_filter = ["state", "host", "model__type", "error_code"]
    search_fields = ["model__key", "model__name", "host"]
    list_select_related = ["model"]
    # The runner's bearer token is never shown: only Modelyard's proxy talks to a runner.
    exclude = ["secret"]
    actions = ["unload_selected"]

    def has_change_permission(self, request, obj=None):
        # Actions need change permission; the change form itself stays read-only.
        return obj is None and request.user.is_superuser

    @admin.display(description="memory estimate", ordering="memory_estimate")
    def memory_estimate_display(self, obj):
        return filesizeformat(obj.memory_estimate) if obj.memory_estimate else "—"

    @admin.display(description="RSS (measured)", ordering="rss")
    def rss_display(self, obj):
        return filesizeformat(obj.rss) if obj.rss else "—"

    @admin.display(description="expires", ordering="expires_at")
    def expires_display(self, obj):
        if obj.state == "ready" and obj.keep_alive < 0:
            return "never"
        return obj.expires_at or "—"

    @admin.action(description="Unload selected models (their runners stop)")
    def unload_selected(self, request, queryset):
        each_through_service(
            self, request, queryset.select_related("model"),
            verb="unload",
            call=lambda i: runtime_services.runtime_unload_start(model=i.model, user=request.user),
            key=lambda i: i.model.key,
            label=lambda i: i.model.name,
        )  # fmt: skip


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "model", "message", "error_code", "actor"]
    list_filter = ["kind", "error_code"]
    search_fields = ["message", "model__key"]
    list_select_related = ["model", "actor"]
    date_hierarchy = "created_at"


@admin.register(ActiveModel)
class ActiveModelAdmin(ReadOnlyAdmin):
    list_display = ["type", "model", "activated_at", "activated_by"]
    list_select_related = ["model", "activated_by"]


@admin.register(StoreScan)
class StoreScanAdmin(ReadOnlyAdmin):
    list_display = [
        "scanned_at",
        "managed",
        "unmanaged",
        "partial",
        "unmanaged_count",
        "duration_ms",
    ]

    @admin.display(description="managed")
    def managed(self, obj):
        return filesizeformat(obj.managed_bytes)

    @admin.display(description="unmanaged")
    def unmanaged(self, obj):
        return filesizeformat(obj.unmanaged_bytes)

    @admin.display(description="partial files")
    def partial(self, obj):
        return filesizeformat(obj.partial_bytes)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hint", "created_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    fields = ["user", "name", "revoked", "hint", "created_at", "last_used_at"]
    readonly_fields = ["hint", "created_at", "last_used_at"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return [*self.readonly_fields, "user", "name"]
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            # Only `revoked` is editable on an existing token.
            services.api_token_set_revoked(token=obj, revoked=obj.revoked, user=request.user)
            return
        token, raw = services.api_token_create(user=obj.user, name=obj.name)
        obj.pk = token.pk
        obj.refresh_from_db()
        self.message_user(
            request,
            format_html("Token created. Copy it now, it is not shown again: <code>{}</code>", raw),
            messages.WARNING,
        )
