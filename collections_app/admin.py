"""Admin for collections, preferences and LLM configs.

Every save and delete goes through the services, the same calls the API makes: they
check each model's type and lock the models a collection references against a
concurrent model delete. A service's refusal comes back as an error on the form.
"""

from django.contrib import admin

from models_app.errors import ModelyardError

from . import services
from .models import Collection, LLMConfig, UserPreference


class ServiceAdmin(admin.ModelAdmin):
    """A ModelAdmin whose save_model calls a service; a ModelyardError becomes a form error."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ModelyardError as exc:
            # The view's transaction rolled the write back. Answer the same POST again with
            # the refusal as a validation error, so the form comes back as it was filled in.
            request.modelyard_refusal = exc
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change, **kwargs)
        refusal = getattr(request, "modelyard_refusal", None)
        if refusal is None:
            return form_class

        class RefusedForm(form_class):
            def clean(self):
                cleaned_data = super().clean()
                field = refusal.details.get("field")
                self.add_error(
                    field if field in self.fields else None,
                    f"{refusal.message} ({refusal.code})",
                )
                return cleaned_data

        return RefusedForm


def _adopt(obj, saved) -> None:
    """Make the admin's unsaved instance the row the service saved, for its log and redirect."""
    obj.pk, obj.updated_at = saved.pk, saved.updated_at
    obj._state.adding = False


@admin.register(Collection)
class CollectionAdmin(ServiceAdmin):
    list_display = [
        "name",
        "embedding_model",
        "reranker_model",
        "splade_model",
        "owner",
        "updated_at",
    ]
    list_filter = ["embedding_model__type"]
    search_fields = ["name", "description", "embedding_model__key"]
    list_select_related = ["embedding_model", "reranker_model", "splade_model", "owner"]
    autocomplete_fields = ["embedding_model", "reranker_model", "splade_model"]

    def save_model(self, request, obj, form, change):
        if change:
            changes = {field: getattr(obj, field) for field in form.changed_data}
            services.collection_update(collection=obj, **changes)
            return
        created = services.collection_create(
            name=obj.name,
            description=obj.description,
            owner=obj.owner,
            embedding_model=obj.embedding_model,
            reranker_model=obj.reranker_model,
            splade_model=obj.splade_model,
        )
        _adopt(obj, created)
        obj.created_at = created.created_at

    def delete_model(self, request, obj):
        services.collection_delete(collection=obj)

    def delete_queryset(self, request, queryset):
        for collection in queryset:
            services.collection_delete(collection=collection)


@admin.register(UserPreference)
class UserPreferenceAdmin(ServiceAdmin):
    list_display = ["user", "default_embedding_model", "default_llm", "default_reranker"]
    list_select_related = ["user", "default_embedding_model", "default_llm", "default_reranker"]
    autocomplete_fields = ["default_embedding_model", "default_llm", "default_reranker"]

    def get_readonly_fields(self, request, obj=None):
        # A preference is its user's: preference_set finds it by user, and cannot move it.
        return ["user"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        fields = form.changed_data if change else services.PREFERENCE_ROLES
        saved = services.preference_set(
            user=obj.user,
            **{
                field: getattr(obj, field) for field in fields if field in services.PREFERENCE_ROLES
            },
        )
        _adopt(obj, saved)

    def delete_model(self, request, obj):
        services.preference_delete(preference=obj)

    def delete_queryset(self, request, queryset):
        for preference in queryset:
            services.preference_delete(preference=preference)


@admin.register(LLMConfig)
class LLMConfigAdmin(ServiceAdmin):
    list_display = ["name", "model", "updated_at"]
    list_select_related = ["model"]
    autocomplete_fields = ["model"]

    def save_model(self, request, obj, form, change):
        if change:
            changes = {field: getattr(obj, field) for field in form.changed_data}
            services.llm_config_update(config=obj, **changes)
            return
        created, _ = services.llm_config_set(
            name=obj.name, description=obj.description, model=obj.model
        )
        _adopt(obj, created)

    def delete_model(self, request, obj):
        services.llm_config_delete(config=obj)

    def delete_queryset(self, request, queryset):
        for config in queryset:
            services.llm_config_delete(config=config)
