"""The admin's import and export of local files go through services/imports.py and exports.py.

"Export…" is an action with an intermediate form (dest and mode) for one selected model;
"Import a local model" is a form of its own, linked from the Models list. Both start the
same operation as the API and the page; a refusal is an admin message above the form,
which keeps what was typed. Both are for superusers only: they name paths on the server.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from .admin_actions import each_through_service
from .models import ModelType
from .services.exports import export_start
from .services.imports import import_start
from .store.local import EXPORT_MODES, IMPORT_MODES

FORM_TEMPLATE = "admin/models_app/model/files_form.html"


class ExportForm(forms.Form):
    dest = forms.CharField(
        max_length=4096,
        help_text="A new directory under EXPORT_ROOTS (absolute, or relative to the first root).",
    )
    mode = forms.ChoiceField(
        choices=[(m, m) for m in EXPORT_MODES],
        initial="copy",
        help_text="copy: the real bytes · hardlink: a link to the blob (one filesystem) · "
        "symlink: a link to the blob (deleting the model breaks it).",
    )


class ImportForm(forms.Form):
    path = forms.CharField(max_length=4096, help_text="A GGUF file or a folder under IMPORT_ROOTS.")
    type = forms.ChoiceField(choices=ModelType.choices, initial=ModelType.LLM)
    name = forms.CharField(
        max_length=200, required=False, help_text="Empty: the file or folder name."
    )
    key = forms.CharField(max_length=150, required=False, help_text="Empty: from the name.")
    mode = forms.ChoiceField(
        choices=[(m, m) for m in IMPORT_MODES],
        initial="copy",
        help_text="copy: the store gets its own copy · hardlink: no second copy (same "
        "filesystem) · symlink: the store points at the file · move: it moves into the store.",
    )

    def clean(self):
        data = super().clean()
        if not data.get("name") and data.get("path"):
            data["name"] = data["path"].rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")
        return data


class FilesAdminMixin:
    """For ModelAdmin: the Export… action and the Import a local model form."""

    def has_files_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_import"
        view = self.admin_site.admin_view(self.import_view)
        # Before the model admin's own: "<object_id>/" would take "import/".
        return [path("import/", view, name=name), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        context = {"has_files_permission": self.has_files_permission(request)}
        return super().changelist_view(request, {**context, **(extra_context or {})})

    def _form_page(self, request, form, **context):
        return TemplateResponse(
            request,
            FORM_TEMPLATE,
            {**self.admin_site.each_context(request), "opts": self.opts, "form": form, **context},
        )

    def import_view(self, request):
        """GET: the import form. POST: queue the import, then back to the Models list."""
        if not self.has_files_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            data = form.cleaned_data
            started = each_through_service(
                self, request, [data],
                verb="import",
                call=lambda d: import_start(
                    path=d["path"], type=d["type"], name=d["name"], key=d["key"] or None,
                    mode=d["mode"], user=request.user,
                ),
                key=lambda d: d["name"],
                label=lambda d: d["name"],
            )  # fmt: skip
            if started:
                return redirect(
                    reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
                )
        return self._form_page(
            request,
            form,
            title="Import a local model",
            intro="A GGUF file (as an LLM, embedding model or reranker) or a folder with a "
            "config.json and weights (embedding, reranker, SPLADE) becomes a local entry "
            "(repo local/<key>); the import operation places it in the store.",
            submit="Import",
        )

    @admin.action(description="Export… (one installed model)", permissions=["files"])
    def export_selected(self, request, queryset):
        """Ask dest and mode for the one selected model, then queue its export."""
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(
                request, "Select exactly one installed model to export.", messages.ERROR
            )
            return None
        (model,) = selected
        form = ExportForm(request.POST if request.POST.get("export") == "yes" else None)
        if form.is_valid():
            started = each_through_service(
                self, request, [model],
                verb="export",
                call=lambda m: export_start(
                    model=m, dest=form.cleaned_data["dest"], mode=form.cleaned_data["mode"],
                    user=request.user,
                ),
                key=lambda m: m.key,
                label=lambda m: m.name,
            )  # fmt: skip
            if started:
                return None
        return self._form_page(
            request,
            form,
            title=f"Export {model.name}",
            intro="Its files (symlinks resolved) and a manifest.json (repo, commit, sha256 per "
            "file) go into a new directory; nothing is ever overwritten.",
            submit="Export",
            action="export_selected",
            selected=model,
        )
