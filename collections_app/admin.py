"""Admin for collections, preferences and LLM configs.

Collection writes go through the services, which lock the models a collection
references against a concurrent model delete.
"""

from django.contrib import admin

from . import services
from .models import Collection, LLMConfig, UserPreference


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
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
        obj.pk, obj.created_at, obj.updated_at = created.pk, created.created_at, created.updated_at
        obj._state.adding = False

    def delete_model(self, request, obj):
        services.collection_delete(collection=obj)

    def delete_queryset(self, request, queryset):
        for collection in queryset:
            services.collection_delete(collection=collection)


@admin.register(UserPreference)
class UserPreferenceAdmin(admin.ModelAdmin):
    list_display = ["user", "default_embedding_model", "default_llm", "default_reranker"]
    list_select_related = ["user", "default_embedding_model", "default_llm", "default_reranker"]
    autocomplete_fields = ["default_embedding_model", "default_llm", "default_reranker"]


@admin.register(LLMConfig)
class LLMConfigAdmin(admin.ModelAdmin):
    list_display = ["name", "model", "updated_at"]
    list_select_related = ["model"]
    autocomplete_fields = ["model"]
