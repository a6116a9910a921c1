from django.conf import settings
from django.db import models

from models_app.models import Model, ModelType


class Collection(models.Model):
    """A search collection built with an embedding model; it blocks that model's deletion."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    embedding_model = models.ForeignKey(
        Model,
        on_delete=models.PROTECT,
        related_name="collections",
        limit_choices_to={"type": ModelType.EMBEDDING},
    )
    reranker_model = models.ForeignKey(
        Model,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="reranker_collections",
        limit_choices_to={"type": ModelType.RERANKER},
    )
    splade_model = models.ForeignKey(
        Model,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="splade_collections",
        limit_choices_to={"type": ModelType.SPLADE},
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class UserPreference(models.Model):
    """Per-user default models; a reference only warns before deletion."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="model_preference"
    )
    default_embedding_model = models.ForeignKey(
        Model,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        limit_choices_to={"type": ModelType.EMBEDDING},
    )
    default_llm = models.ForeignKey(
        Model,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        limit_choices_to={"type": ModelType.LLM},
    )
    default_reranker = models.ForeignKey(
        Model,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        limit_choices_to={"type": ModelType.RERANKER},
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user__username"]

    def __str__(self):
        return f"Preferences of {self.user}"


class LLMConfig(models.Model):
    """A named tier ("high", "low") pointing at an LLM, for HyDE and summarising."""

    name = models.CharField(max_length=50, unique=True)
    description = models.TextField(blank=True)
    model = models.ForeignKey(
        Model,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="llm_configs",
        limit_choices_to={"type": ModelType.LLM},
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "LLM config"

    def __str__(self):
        return self.name
