"""API shapes (ninja schemas) for collections, preferences and LLM configs.

Models are named by their registry key in requests and responses, never by id.
"""

from datetime import datetime

from ninja import Field, Schema
from pydantic import ConfigDict, field_validator


class ModelRef(Schema):
    key: str
    name: str


class CollectionOut(Schema):
    id: int
    name: str
    description: str
    owner: str | None
    embedding_model: ModelRef
    reranker_model: ModelRef | None
    splade_model: ModelRef | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_owner(obj) -> str | None:
        return obj.owner.get_username() if obj.owner_id else None


class CollectionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=200)
    description: str = ""
    embedding_model: str = Field(..., min_length=1)
    reranker_model: str | None = None
    splade_model: str | None = None


class CollectionPatch(Schema):
    """Only the fields sent change; reranker_model and splade_model accept null to clear."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = None
    embedding_model: str | None = Field(None, min_length=1)
    reranker_model: str | None = None
    splade_model: str | None = None

    @field_validator("name", "description", "embedding_model")
    @classmethod
    def not_null(cls, value):
        # Runs only for fields that were sent: leaving one out is fine, null is not.
        if value is None:
            raise ValueError("may be left out but not null")
        return value


class PreferenceOut(Schema):
    default_embedding_model: ModelRef | None
    default_llm: ModelRef | None
    default_reranker: ModelRef | None
    updated_at: datetime | None


class PreferenceIn(Schema):
    """Only the fields sent change; null clears one."""

    model_config = ConfigDict(extra="forbid")

    default_embedding_model: str | None = None
    default_llm: str | None = None
    default_reranker: str | None = None


class LLMConfigOut(Schema):
    name: str
    description: str
    model: ModelRef | None
    updated_at: datetime


class LLMConfigIn(Schema):
    """Only the fields sent change (a new config starts empty); model null clears it."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    model: str | None = None

    @field_validator("description")
    @classmethod
    def not_null(cls, value):
        if value is None:
            raise ValueError("may be left out but not null")
        return value
