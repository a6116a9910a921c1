"""API shapes (ninja schemas) for collections, preferences and LLM configs.

Models are named by their registry key in requests and responses, never by id.
"""

from datetime import datetime

from ninja import Schema

from models_app.api_contract import CollectionName, Input, ModelKey, Text, omittable


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


class CollectionIn(Input):
    name: CollectionName
    description: Text = ""
    embedding_model: ModelKey
    reranker_model: ModelKey | None = None
    splade_model: ModelKey | None = None


class CollectionPatch(Input):
    """Only the fields sent change; reranker_model and splade_model accept null to clear.

    name, description and embedding_model may be left out but not sent as null: their
    schema is not nullable, and the default (left out) is not a value a client can send.
    """

    name: CollectionName = omittable()
    description: Text = omittable()
    embedding_model: ModelKey = omittable()
    reranker_model: ModelKey | None = None
    splade_model: ModelKey | None = None


class PreferenceOut(Schema):
    default_embedding_model: ModelRef | None
    default_llm: ModelRef | None
    default_reranker: ModelRef | None
    updated_at: datetime | None


class PreferenceIn(Input):
    """Only the fields sent change; null clears one."""

    default_embedding_model: ModelKey | None = None
    default_llm: ModelKey | None = None
    default_reranker: ModelKey | None = None


class LLMConfigOut(Schema):
    name: str
    description: str
    model: ModelRef | None
    updated_at: datetime


class LLMConfigIn(Input):
    """Only the fields sent change (a new config starts empty); model null clears it."""

    description: Text = omittable()
    model: ModelKey | None = None
