"""Settings > Models, keeping a model whole and current: Verify, Repair, Update, and Check
for updates.

Thin like the rest of the page (models_app/views_common.py, whose access, error mapping and
action responses these use): each action calls one service and answers with the card.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST

from . import selectors, services
from .views_common import action_response, card_of, checked, maps_errors, superuser_required


def _started(request: HttpRequest, key: str, result: services.StartResult) -> HttpResponse:
    model = selectors.model_get(key=key)
    level, message = result.toast(model.name)
    return action_response(request, card_of(key), level=level, message=message)


@superuser_required
@require_POST
@maps_errors
def model_verify(request: HttpRequest, key: str) -> HttpResponse:
    """Queue a verify (the `load` field adds the vocabulary test-load)."""
    model = selectors.model_get(key=key)
    result = services.verify_start(model=model, load=checked(request, "load"), user=request.user)
    return _started(request, key, result)


@superuser_required
@require_POST
@maps_errors
def model_repair(request: HttpRequest, key: str) -> HttpResponse:
    """Queue a repair: only the damaged files are fetched again."""
    model = selectors.model_get(key=key)
    return _started(request, key, services.repair_start(model=model, user=request.user))


@superuser_required
@require_POST
@maps_errors
def model_update(request: HttpRequest, key: str) -> HttpResponse:
    """Queue an update: only the changed files are fetched."""
    model = selectors.model_get(key=key)
    return _started(request, key, services.update_start(model=model, user=request.user))


@superuser_required
@require_POST
@maps_errors
def model_update_check(request: HttpRequest, key: str) -> HttpResponse:
    """Ask the Hub now (in the request, as the API's update-check does); answer the card."""
    model = selectors.model_get(key=key)
    found = services.update_check(model=model)
    if found.available:
        level, message = "success", f"Update available for {model.name}: {found.reason}."
    else:
        level, message = "info", f"{model.name}: no update ({found.reason})."
    return action_response(request, card_of(key), level=level, message=message)
