"""Settings > Models, the runtime's part: the Runtime panel, Load, Unload, Try it.

Thin like the rest of the page (models_app/views_common.py, whose access, error mapping and
action responses these use): each action calls services/runtime/ and answers with the
model's card and the panel out of band.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from . import selectors
from .cards import build_cards
from .errors import NotInstalled
from .services import runtime as runtime_services
from .views_common import action_response, maps_errors, runtime_context, superuser_required


@superuser_required
@require_GET
def models_runtime(request: HttpRequest) -> HttpResponse:
    """Render the Runtime panel (re-fetched by live.js when the runtime changes)."""
    return render(request, "modelyard/_runtime_panel.html", runtime_context())


def _runtime_action_response(request: HttpRequest, key: str, *, level: str, message: str):
    runtime = runtime_context()
    model = selectors.model_get(key=key)
    card = build_cards([model], runtime_instances=runtime["runtime_instances"])[0]
    return action_response(request, card, level=level, message=message, runtime=runtime)


@superuser_required
@require_POST
@maps_errors
def model_load(request: HttpRequest, key: str) -> HttpResponse:
    """Load a GGUF model on the most capacious host's runtime (or renew its keep-alive)."""
    model = selectors.model_get(key=key)
    result = runtime_services.runtime_load_start(model=model, user=request.user)
    if result.start is not None:
        level, message = result.start.toast(model.name)
    else:
        level = "info"
        message = f"{model.name} is already loaded on {result.instance.host}; its keep-alive "
        message += "starts again."
    return _runtime_action_response(request, key, level=level, message=message)


@superuser_required
@require_POST
@maps_errors
def model_unload(request: HttpRequest, key: str) -> HttpResponse:
    """Unload a model: its host's runtime stops the runner, and the memory comes back."""
    model = selectors.model_get(key=key)
    result = runtime_services.runtime_unload_start(model=model, user=request.user)
    level, message = result.toast(model.name)
    return _runtime_action_response(request, key, level=level, message=message)


@superuser_required
@require_GET
@maps_errors
def model_try(request: HttpRequest, key: str) -> HttpResponse:
    """Render the Try it box: a streamed chat or completion, or two texts' similarity."""
    model = selectors.model_get(key=key)
    runtime_services.runtime_check_runnable(model)
    if not hasattr(model, "installation"):
        raise NotInstalled(
            f"{model.key} is not installed; download it before trying it.",
            details={"model": model.key},
        )
    card = build_cards([model])[0]
    context = {
        "card": card,
        "model": model,
        "page_href": card.page_href,
        "embedding": model.type in runtime_services.EMBEDDING_TYPES,
        "max_tokens_limit": card.runtime.n_ctx if card.loaded else (model.context_window or 4096),
    }
    if request.htmx:
        return render(request, "modelyard/_try_dialog.html", context)
    return render(request, "modelyard/try_page.html", context)
