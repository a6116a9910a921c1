"""Settings > Models, the HTMX page. Thin: parse, call a selector or a service, render.

One view serves the full page and its list fragment (`request.htmx`); every action
posts to a view that calls the same service as the API and the admin and answers
with the model's updated card, the header out of band and an `HX-Trigger` toast.
ModelyardError is mapped to a response once, in `_error_response`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import (
    HttpResponseClientRedirect,
    push_url,
    reswap,
    retarget,
    trigger_client_event,
)

from . import selectors, services
from .cards import Card, build_cards, model_page_href, runtime_rows
from .errors import ConfirmRequired, ModelyardError, NotFound
from .models import Model, OperationKind, OperationState

TYPE_TABS = (
    ("embedding", "Embedding"),
    ("llm", "LLMs"),
    ("reranker", "Rerankers"),
    ("splade", "SPLADE"),
)
NOUNS = {
    "embedding": ("embedding model", "embedding models"),
    "llm": ("LLM", "LLMs"),
    "reranker": ("reranker", "rerankers"),
    "splade": ("SPLADE model", "SPLADE models"),
}
STATUSES = (("all", "All"), ("installed", "Installed"), ("available", "Available"))
PAGE_SIZE = 60
SEARCH_MAX = 200
# Our error responses carry this header; live.js swaps them although their status is 4xx,
# and only them: a 403 from the CSRF check must not land inside a card.
ERROR_HEADER = "X-Modelyard-Error"


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
    """Answer a ModelyardError raised by the view with `_error_response`."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except ModelyardError as exc:
            return _error_response(request, exc, **kwargs)

    return wrapped


@dataclass(frozen=True)
class Filters:
    """The page's state, read from and written to its query string."""

    type: str = "embedding"
    status: str = "all"
    q: str = ""
    page: int = 1

    @classmethod
    def parse(cls, params) -> Filters:
        """Read the query string; an unknown value falls back to its default."""
        type_ = params.get("type", "")
        status = params.get("status", "")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            type=type_ if type_ in dict(TYPE_TABS) else cls.type,
            status=status if status in dict(STATUSES) else cls.status,
            # NUL cannot reach PostgreSQL; a search for it finds nothing anyway.
            q=" ".join(params.get("q", "").replace("\x00", "").split())[:SEARCH_MAX],
            page=page,
        )

    def query(self, **changes) -> str:
        """Return the canonical query string of this state (defaults left out)."""
        state = replace(self, **changes)
        params: dict[str, str | int] = {"type": state.type}
        if state.status != "all":
            params["status"] = state.status
        if state.q:
            params["q"] = state.q
        if state.page > 1:
            params["page"] = state.page
        return "?" + urlencode(params)


def _checked(request: HttpRequest, name: str) -> bool:
    return request.POST.get(name, "").lower() in ("true", "1", "yes", "on")


def _confirmed(request: HttpRequest) -> bool:
    return _checked(request, "confirm")


def _card(key: str) -> Card:
    return build_cards([selectors.model_get(key=key)])[0]


# The id of the Runtime panel: an action posted from it is answered with the panel.
RUNTIME_PANEL = "runtime-panel"


# --- pages and fragments ----------------------------------------------------------------


def _listing(filters: Filters, *, runtime_instances=None) -> dict:
    qs = selectors.model_list(
        type=filters.type, status=filters.status, search=filters.q or None, sort="recommended"
    )
    total = qs.count()
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.page, pages)
    filters = replace(filters, page=page)
    models = selectors.model_objects_page(qs, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    counts = dict(
        selectors.model_list(status=filters.status, search=filters.q or None)
        .order_by()
        .values_list("type")
        .annotate(n=Count("id"))
    )
    base = reverse("models:page")
    return {
        "filters": filters,
        "statuses": STATUSES,
        "page_url": base,
        "canonical_url": base + filters.query(),
        "tabs": [
            {
                "type": type_,
                "label": label,
                "count": counts.get(type_, 0),
                "href": base + filters.query(type=type_, page=1),
                "current": type_ == filters.type,
            }
            for type_, label in TYPE_TABS
        ],
        "summary": f"{total} {NOUNS[filters.type][total != 1]}",
        "plural": NOUNS[filters.type][1],
        "cards": build_cards(models, runtime_instances=runtime_instances),
        "total": total,
        "page": page,
        "pages": pages,
        "previous_href": base + filters.query(page=page - 1) if page > 1 else "",
        "next_href": base + filters.query(page=page + 1) if page < pages else "",
        "clear_href": base + Filters(type=filters.type).query(),
    }


def _header_context(*, store_operation: bool = False) -> dict:
    """Return the header's figures; with `store_operation`, the running prune too.

    The full page leaves the prune out: its websocket snapshot lists active operations,
    and a store-wide one makes live.js fetch the header (`models_header`), which has it.
    """
    cache = selectors.cache_summary()
    context = {"cache": cache, "other_bytes": cache["unmanaged_bytes"] + cache["partial_bytes"]}
    if store_operation:
        context["store_operation"] = selectors.store_operation_current()
    return context


def _runtime_context() -> dict:
    """Return the Runtime panel's rows (every instance on every host) and its hosts."""
    instances = list(selectors.runtime_instances())
    return {
        "runtime_instances": instances,
        "runtime_rows": runtime_rows(instances, now=timezone.now()),
        "runtime_hosts": selectors.runtime_host_list(),
    }


@superuser_required
@require_GET
@vary_on_headers("HX-Request")
def models_page(request: HttpRequest) -> HttpResponse:
    """Render Settings > Models, or only its list for an htmx request."""
    filters = Filters.parse(request.GET)
    if request.htmx and not request.htmx.history_restore_request:
        listing = _listing(filters)
        response = render(request, "modelyard/_model_list.html", listing)
        return push_url(response, listing["canonical_url"])
    runtime = _runtime_context()
    # The cards take their runtime state from the panel's rows: no query of their own.
    listing = _listing(filters, runtime_instances=runtime["runtime_instances"])
    return render(
        request, "modelyard/models_page.html", {**listing, **_header_context(), **runtime}
    )


@superuser_required
@require_GET
def models_header(request: HttpRequest) -> HttpResponse:
    """Render the header with the cache figures (polled and re-fetched by live.js)."""
    return render(request, "modelyard/_header.html", _header_context(store_operation=True))


@superuser_required
@require_GET
@maps_errors
def model_card(request: HttpRequest, key: str) -> HttpResponse:
    """Render one model's card (re-fetched by live.js when its operation ends)."""
    return render(request, "modelyard/_card.html", {"card": _card(key)})


# --- actions ----------------------------------------------------------------------------


def _action_response(
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
            **_header_context(),
        },
        request=request,
    )
    response = HttpResponse(html, status=status)
    return trigger_client_event(response, "toast", {"level": level, "message": message})


def _store_action_response(request: HttpRequest, *, message: str, level: str = "info"):
    """Answer an action on a store-wide operation: the header (which shows it) and a toast."""
    if not request.htmx:
        messages.add_message(request, _MESSAGE_LEVELS[level], message)
        return redirect("models:page")
    response = render(request, "modelyard/_header.html", _header_context(store_operation=True))
    return trigger_client_event(response, "toast", {"level": level, "message": message})


_MESSAGE_LEVELS = {"success": messages.SUCCESS, "info": messages.INFO, "error": messages.ERROR}


@superuser_required
@require_POST
@maps_errors
def model_download(request: HttpRequest, key: str) -> HttpResponse:
    model = selectors.model_get(key=key)
    result = services.download_start(model=model, user=request.user)
    level, message = result.toast(model.name)
    return _action_response(request, _card(key), level=level, message=message)


@superuser_required
@require_POST
@maps_errors
def model_activate(request: HttpRequest, key: str) -> HttpResponse:
    model = selectors.model_get(key=key)
    previous = [a.model for a in selectors.active_model_list() if a.type == model.type]
    services.model_activate(model=model, user=request.user)
    # The previously active card loses its badge and gains "Set active".
    others = [m for m in previous if m.pk != model.pk]
    cards = build_cards(
        list(selectors.model_queryset().filter(pk__in=[model.pk, *(m.pk for m in others)]))
    )
    card = next(c for c in cards if c.model.pk == model.pk)
    return _action_response(
        request,
        card,
        level="success",
        message=f"{model.name} is now the active {NOUNS[model.type][0]}.",
        also=[c for c in cards if c is not card],
    )


@superuser_required
@require_http_methods(["GET", "POST"])
@maps_errors
def model_delete(request: HttpRequest, key: str) -> HttpResponse:
    """GET: the delete dialog from the usage preflight. POST: queue the delete."""
    model = selectors.model_get(key=key)
    if request.method == "GET":
        # No dialog while another operation holds the model: the 409 card names it.
        services.operation_exclusion_check(model=model, kind=OperationKind.DELETE)
        return _delete_dialog(request, model, selectors.model_usage(model=model))
    result = services.delete_start(model=model, confirm=_confirmed(request), user=request.user)
    level, message = result.toast(model.name)
    return _action_response(request, _card(key), level=level, message=message)


def _delete_dialog(request: HttpRequest, model: Model, usage: dict, status: int = 200):
    context = {"model": model, "usage": usage, "page_href": model_page_href(model)}
    if request.htmx:
        return render(request, "modelyard/_delete_dialog.html", context, status=status)
    return render(request, "modelyard/delete_page.html", context, status=status)


@superuser_required
@require_POST
@maps_errors
def operation_cancel(request: HttpRequest, operation_id: int) -> HttpResponse:
    """Cancel an operation; with `discard_partial`, a download's partial files go too."""
    op = selectors.operation_get(operation_id=operation_id)
    discard = _checked(request, "discard_partial")
    op = services.operation_cancel(operation=op, user=request.user, discard_partial=discard)
    verb = op.get_kind_display()
    if op.model_id is None:
        text = "cancelled" if op.state == OperationState.CANCELLED else "stops after this delete"
        return _store_action_response(request, message=f"{verb} of the models store {text}.")
    name = op.model.name
    if op.is_active:
        message = f"Cancelling the {op.kind} of {name}…"
        if discard:
            message += " Its partial files are discarded when it stops."
    elif discard:
        freed = filesizeformat(op.result.get("partial_bytes_discarded", 0))
        done = f"{verb} of {name} cancelled" if op.state == OperationState.CANCELLED else name
        message = f"{done}: partial files discarded ({freed})."
    else:
        message = f"{verb} of {name} cancelled; the partial files stay for a retry."
    return _action_response(request, _card(op.model.key), level="info", message=message)


@superuser_required
@require_POST
@maps_errors
def operation_retry(request: HttpRequest, operation_id: int) -> HttpResponse:
    op = selectors.operation_get(operation_id=operation_id)
    op = services.operation_retry(operation=op, user=request.user)
    if op.model_id is None:
        message = f"{op.get_kind_display()} of the models store queued again."
        return _store_action_response(request, message=message, level="success")
    message = f"{op.get_kind_display()} of {op.model.name} queued again; it resumes."
    return _action_response(request, _card(op.model.key), level="success", message=message)


# --- the one error mapping --------------------------------------------------------------


def _error_response(
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
        response = _delete_dialog(request, model, exc.details["usage"], status=exc.status)
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
    return trigger_client_event(response, "toast", {"level": level, "message": text})


def _model_of(*, key: str | None, operation_id: int | None) -> Model | None:
    try:
        if operation_id is not None:
            key = selectors.operation_get(operation_id=operation_id).model.key
        return selectors.model_get(key=key) if key is not None else None
    except NotFound:
        return None
