"""The admin's Verify, Repair, Update and Check for updates actions on the Models list.

Each calls the same service as the API (services/verification.py, services/updates.py).
"""

from django.contrib import admin

from . import services
from .admin_actions import each_through_service


class MaintenanceAdminMixin:
    """For ModelAdmin: keep the selected models whole and current."""

    @admin.action(description="Verify selected models (hash every file again)")
    def verify_selected(self, request, queryset):
        self._start_each(request, queryset, "verify", services.verify_start)

    @admin.action(description="Repair selected models (fetch damaged files again)")
    def repair_selected(self, request, queryset):
        self._start_each(request, queryset, "repair", services.repair_start)

    @admin.action(description="Update selected models (fetch changed files)")
    def update_selected(self, request, queryset):
        self._start_each(request, queryset, "update", services.update_start)

    @admin.action(description="Check selected models for updates (asks the Hub now)")
    def update_check_selected(self, request, queryset):
        each_through_service(
            self, request, queryset,
            verb="check for updates of",
            call=lambda m: services.update_check(model=m),
            key=lambda m: m.key,
            done=lambda m, found: f"{m.key}: "
            + ("update available" if found.available else "no update")
            + f" ({found.reason}).",
        )  # fmt: skip

    def _start_each(self, request, queryset, verb, start):
        each_through_service(
            self, request, queryset,
            verb=verb,
            call=lambda m: start(model=m, user=request.user),
            key=lambda m: m.key,
            label=lambda m: m.name,
        )  # fmt: skip
