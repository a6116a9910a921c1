"""What every view of Settings > Models shares: access, the action answer, the error mapping.

The page's views (views.py and its siblings for runtime, files, verify and custom entries)
are thin: parse, call a selector or a service, answer with `action_response` (the card,
the header out of band, a toast) or, for a ModelyardError, with `error_response`, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget, trigger_client_event

from . import selectors
from .cards import Card, build_cards, model_page_href, runtime_rows
from .errors import ConfirmRequired, ModelyardError, NotFound
from .models import Model

# Our error responses carry this header; live.js swaps them although their status is 4xx,
# and only them: a 403 from the CSRF check must not land inside a card.
ERROR_HEADER = "X-Modelyard-Error"
# The id of the Runtime panel: an action posted from it is answered with the panel.
RUNTIME_PANEL = "runtime-panel"


# --- access and request parsing ---------------------------------------------------------


def superuser_required(view):
    """Send anonymous users to the admin login (with ?next=); refuse other users with 403."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            login = reverse("admin:login")
            if request.htmx:
                # A fragment request would swap the login page into a card; go there instead.
                back = request.htmx.current_url_abs_path or reverse("models:page")
                return HttpResponseClientRedirect(f"{login}?{urlencode({'next': back})}")
            return redirect_to_login(request.get_full_path(), login)
        if not request.user.is_superuser:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


def maps_errors(view):
    """Answer a ModelyardError raised by the view with `error_response`."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ModelyardError as exc:
            return error_response(request, exc, **kwargs)

    return wrapped


def checked(request: HttpRequest, name: str) -> bool:
    return request.POST.get(name, "").lower() in ("true", "1", "yes", "on")


def confirmed(request: HttpRequest) -> bool:
    return checked(request, "confirm")


def card_of(key: str) -> Card:
    return build_cards([selectors.model_get(key=key)])[0]


# --- answers ----------------------------------------------------------------------------


def header_context(*, store_operation: bool = False) -> dict:
    """Return the header's figures; with `store_operation`, the running prune too.

    The full page leaves the prune out: its websocket snapshot lists active operations,
    and a store-wide one makes live.js fetch the header (`models_header`), which has it.
    """
    cache = selectors.cache_summary()
    context = {"cache": cache, "other_bytes": cache["unmanaged_bytes"] + cache["partial_bytes"]}
    if store_operation:
        context["store_operation"] = selectors.store_operation_current()
    return context


def runtime_context() -> dict:
    """Return the Runtime panel's rows (every instance on every host) and its hosts."""
    instances = list(selectors.runtime_instances())
    return {
        "runtime_instances": instances,
        "runtime_rows": runtime_rows(instances, now=timezone.now()),
        "runtime_hosts": selectors.runtime_host_list(),
    }


def action_response(
    request: HttpRequest,
    card: Card,
    *,
    level: str,
    message: str,
    status: int = 200,
    also: Sequence[Card] = (),
    runtime: dict | None = None,
) -> HttpResponse:
    """Answer an action: the card, other changed cards and the header out of band, a toast.

    With `runtime` (a runtime action) the Runtime panel comes out of band too; when the
    action was posted from the panel, the panel is the answer and the card comes along.
    """
    if not request.htmx:
        # Without JavaScript the forms post normally: back to the page, the toast as a message.
        messages.add_message(request, _MESSAGE_LEVELS[level], message)
        return redirect(card.page_href, permanent=False)
    from_panel = runtime is not None and request.htmx.target == RUNTIME_PANEL
    html = render_to_string(
        "modelyard/_action_response.html",
        {
            "card": card,
            "also": also,
            "from_panel": from_panel,
            **(runtime or {}),
            "with_runtime": runtime is not None,
            **header_context(),
        },
        request=request,
    )
    response = HttpResponse(html, status=status)
    return with_toast(response, level, message)


def store_action_response(request: HttpRequest, *, message: str, level: str = "info"):
    """Answer an action on a store-wide operation: the header (which shows it) and a toast."""
    if not request.htmx:
        messages.add_message(request, _MESSAGE_LEVELS[level], message)
        return redirect("models:page")
    response = render(request, "modelyard/_header.html", header_context(store_operation=True))
    return with_toast(response, level, message)


def with_toast(response: HttpResponse, level: str, message: str) -> HttpResponse:
    """Ask the page (HX-Trigger) to show a toast, raised on the body.

    htmx raises the event on the element that sent the request unless told otherwise, and
    by the time the answer comes a live refresh may have replaced that element: an event
    on a detached element reaches no listener, and the toast would be lost.
    """
    return trigger_client_event(
        response, "toast", {"level": level, "message": message, "target": "body"}
    )


_MESSAGE_LEVELS = {"success": messages.SUCCESS, "info": messages.INFO, "error": messages.ERROR}


def delete_dialog(request: HttpRequest, model: Model, usage: dict, status: int = 200):
    context = {"model": model, "usage": usage, "page_href": model_page_href(model)}
    if request.htmx:
        return render(request, "modelyard/_delete_dialog.html", context, status=status)
    return render(request, "modelyard/delete_page.html", context, status=status)


# --- the one error mapping --------------------------------------------------------------


def error_response(
    request: HttpRequest,
    exc: ModelyardError,
    *,
    key: str | None = None,
    operation_id: int | None = None,
) -> HttpResponse:
    """Map a ModelyardError to the card showing its code and message, a toast and its status.

    A delete that needs confirmation answers with the dialog instead, so the user sees
    what the confirmation is for.
    """
    text = f"{exc.code}: {exc.message}"
    model = _model_of(key=key, operation_id=operation_id)
    if isinstance(exc, ConfirmRequired) and model is not None:
        if not request.htmx:
            return redirect("models:delete", key=model.key)
        response = delete_dialog(request, model, exc.details["usage"], status=exc.status)
        response = retarget(reswap(response, "innerHTML"), "#dialog-slot")
    elif not request.htmx and (model is not None or request.method == "POST"):
        messages.error(request, text)
        return redirect(model_page_href(model) if model else reverse("models:page"))
    elif model is None:
        # Nothing to show the error in (an unknown key or operation): the toast says it.
        response = reswap(HttpResponse(status=exc.status), "none")
    else:
        card = build_cards([model])[0]
        card.error = exc
        response = render(request, "modelyard/_card.html", {"card": card}, status=exc.status)
        # Into the card, wherever the request meant to swap (the delete dialog's slot).
        response = retarget(reswap(response, "outerHTML"), f'.card[data-model="{model.key}"]')
    response[ERROR_HEADER] = exc.code
    level = "info" if isinstance(exc, ConfirmRequired) else "error"
    return with_toast(response, level, text)


def _model_of(*, key: str | None, operation_id: int | None) -> Model | None:
    try:
        if operation_id is not None:
            key = selectors.operation_get(operation_id=operation_id).model.key
        return selectors.model_get(key=key) if key is not None else None
    except NotFound:
        return None
