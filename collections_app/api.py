"""The collections, preferences and LLM-config API (django-ninja). Thin: parse, call, shape."""

from ninja import Router
from ninja.responses import Status

from models_app.api_contract import ConfigName, Id, responses

from . import selectors, services
from .schemas import (
    CollectionIn,
    CollectionOut,
    CollectionPatch,
    LLMConfigIn,
    LLMConfigOut,
    PreferenceIn,
    PreferenceOut,
)

router = Router(tags=["collections"])

MODEL_FIELDS = ("embedding_model", "reranker_model", "splade_model")


@router.get("/collections", response=responses(list[CollectionOut]))
def list_collections(request):
    """List collections with the key and name of each model they use."""
    return selectors.collection_list()


@router.post("/collections", response=responses({201: CollectionOut}, 404, 409, 422))
def create_collection(request, payload: CollectionIn):
    """Create a collection; each model must exist and be of its role's type."""
    models = selectors.models_by_key(keys={f: getattr(payload, f) for f in MODEL_FIELDS})
    collection = services.collection_create(
        name=payload.name, description=payload.description, owner=request.auth, **models
    )
    return Status(201, collection)


@router.get("/collections/{collection_id}", response=responses(CollectionOut, 404, 422))
def get_collection(request, collection_id: Id):
    """Return one collection."""
    return selectors.collection_get(collection_id=collection_id)


@router.patch("/collections/{collection_id}", response=responses(CollectionOut, 404, 409, 422))
def update_collection(request, collection_id: Id, payload: CollectionPatch):
    """Change the fields sent; reranker_model and splade_model accept null to clear."""
    collection = selectors.collection_get(collection_id=collection_id)
    changes = payload.dict(exclude_unset=True)
    keys = {f: changes.pop(f) for f in MODEL_FIELDS if f in changes}
    changes.update(selectors.models_by_key(keys=keys))
    return services.collection_update(collection=collection, **changes)


@router.delete("/collections/{collection_id}", response=responses({204: None}, 404, 422))
def delete_collection(request, collection_id: Id):
    """Delete a collection."""
    collection = selectors.collection_get(collection_id=collection_id)
    services.collection_delete(collection=collection)
    return Status(204, None)


@router.get("/preferences", response=responses(PreferenceOut))
def get_preferences(request):
    """Return the requesting user's default models; nulls when none are saved."""
    preference = selectors.preference_get(user=request.auth)
    if preference is None:
        return {
            "default_embedding_model": None,
            "default_llm": None,
            "default_reranker": None,
            "updated_at": None,
        }
    return preference


@router.put("/preferences", response=responses(PreferenceOut, 404, 409, 422))
def set_preferences(request, payload: PreferenceIn):
    """Set the default models sent, by key; null clears one, a field left out keeps its value."""
    models = selectors.models_by_key(keys=payload.dict(exclude_unset=True))
    services.preference_set(user=request.auth, **models)
    return selectors.preference_get(user=request.auth)


@router.get("/llm-configs", response=responses(list[LLMConfigOut]))
def list_llm_configs(request):
    """List the named LLM tiers."""
    return selectors.llm_config_list()


@router.put(
    "/llm-configs/{name}",
    response=responses({200: LLMConfigOut, 201: LLMConfigOut}, 404, 409, 422),
)
def set_llm_config(request, name: ConfigName, payload: LLMConfigIn):
    """Create (201) or update (200) a named LLM config; model is a key or null."""
    changes = payload.dict(exclude_unset=True)
    if "model" in changes:
        changes["model"] = selectors.models_by_key(keys={"model": changes["model"]})["model"]
    config, created = services.llm_config_set(name=name, **changes)
    return Status(201 if created else 200, config)


@router.delete("/llm-configs/{name}", response=responses({204: None}, 404, 422))
def delete_llm_config(request, name: ConfigName):
    """Delete a named LLM config."""
    services.llm_config_delete(config=selectors.llm_config_get(name=name))
    return Status(204, None)
