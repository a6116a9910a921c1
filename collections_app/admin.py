from django.contrib import admin

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
