"""The admin's add of custom entries and delete of custom and local ones go through
services/custom_models.py.

Adding in the admin is the API's add: the form's fields are checked against the hub by
`custom_model_add`, which saves the entries; its refusal shows on the form.
"""

from django import forms
from django.contrib import messages

from .errors import ModelyardError
from .models import Model
from .services import custom_models


class CustomEntryAddForm(forms.ModelForm):
    instruction = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Default instruction."
    )

    class Meta:
        model = Model
        fields = [
            "repo_id", "type", "revision", "gguf_file", "name", "embedding_dimension",
            "pooling", "query_prefix", "document_prefix",
        ]  # fmt: skip
        help_texts = {
            "gguf_file": "For a GGUF repo: the file of this entry (the Models page's Inspect "
            "lists them). Empty: the repo's config and safetensors weights.",
            "name": "Empty: the repo's name.",
        }

    user = None  # set by the admin for each request
    created: list[Model] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False
        self.fields["revision"].initial = "main"

    def clean(self):
        data = super().clean()
        if not data.get("name") and data.get("repo_id"):
            data["name"] = data["repo_id"].partition("/")[2] or data["repo_id"]
        return data

    def _post_clean(self):
        super()._post_clean()
        if self.errors:
            return
        data = self.cleaned_data
        try:
            self.created = custom_models.custom_model_add(
                repo_id=data["repo_id"],
                type=data["type"],
                revision=data["revision"] or "main",
                file=data["gguf_file"] or None,
                name=self.data.get("name") or None,
                dimension=data["embedding_dimension"],
                pooling=data["pooling"] or None,
                query_prefix=data["query_prefix"] or None,
                document_prefix=data["document_prefix"] or None,
                instruction=data["instruction"] or None,
                user=self.user,
            )
        except ModelyardError as exc:
            self.add_error(None, f"{exc.code}: {exc.message}")


class CustomEntryAdminMixin:
    """For ModelAdmin: add custom entries through the service, remove them through it."""

    def get_form(self, request, obj=None, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, **kwargs)
        return type("CustomEntryAddForm", (CustomEntryAddForm,), {"user": request.user})

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": [*CustomEntryAddForm.Meta.fields, "instruction"]})]
        return super().get_fieldsets(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # The service saved the entries while the form was checked.
        first = form.created[0]
        obj.pk, obj.key, obj.name = first.pk, first.key, first.name
        if len(form.created) > 1:
            keys = ", ".join(m.key for m in form.created)
            self.message_user(request, f"Added {keys}.", messages.SUCCESS)
        return None

    def save_related(self, request, form, formsets, change):
        if change:
            super().save_related(request, form, formsets, change)

    def get_deleted_objects(self, objs, request):
        # Its operations (a failed download or import) go with the entry; their admin is
        # read-only, which would refuse the delete. The service decides what may go.
        deleted, counts, _, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request, obj):
        try:
            custom_models.custom_model_remove(model=obj, user=request.user)
        except ModelyardError as exc:
            self.message_user(request, f"Cannot remove {obj.key}: {exc.code}: {exc.message}",
                              messages.ERROR)  # fmt: skip
