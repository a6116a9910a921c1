"""Settings > Models, the HTMX page. Thin: parse, call a selector or a service, render.

One view serves the full page and its list fragment (`request.htmx`); every action
posts to a view that calls the same service as the API and the admin and answers
with the model's updated card, the header out of band and an `HX-Trigger` toast
(views_common.py, which maps a ModelyardError to a response once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import push_url

from . import selectors, services
from .cards import build_cards
from .models import OperationKind, OperationState
from .views_common import (
    action_response,
    card_of,
    checked,
    confirmed,
    delete_dialog,
    header_context,
    maps_errors,
    runtime_context,
    store_action_response,
    superuser_required,
)

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


# --- access and request parsing ---------------------------------------------------------


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
    runtime = runtime_context()
    # The cards take their runtime state from the panel's rows: no query of their own.
    listing = _listing(filters, runtime_instances=runtime["runtime_instances"])
    return render(request, "modelyard/models_page.html", {**listing, **header_context(), **runtime})


@superuser_required
@require_GET
def models_header(request: HttpRequest) -> HttpResponse:
    """Render the header with the cache figures (polled and re-fetched by live.js)."""
    return render(request, "modelyard/_header.html", header_context(store_operation=True))


@superuser_required
@require_GET
@maps_errors
def model_card(request: HttpRequest, key: str) -> HttpResponse:
    """Render one model's card (re-fetched by live.js when its operation ends)."""
    return render(request, "modelyard/_card.html", {"card": card_of(key)})


# --- actions ----------------------------------------------------------------------------


@superuser_required
@require_POST
@maps_errors
def model_download(request: HttpRequest, key: str) -> HttpResponse:
    model = selectors.model_get(key=key)
    result = services.download_start(model=model, user=request.user)
    level, message = result.toast(model.name)
    return action_response(request, card_of(key), level=level, message=message)


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
    return action_response(
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
        return delete_dialog(request, model, selectors.model_usage(model=model))
    result = services.delete_start(model=model, confirm=confirmed(request), user=request.user)
    level, message = result.toast(model.name)
    return action_response(request, card_of(key), level=level, message=message)


@superuser_required
@require_POST
@maps_errors
def operation_cancel(request: HttpRequest, operation_id: int) -> HttpResponse:
    """Cancel an operation; with `discard_partial`, a download's partial files go too."""
    op = selectors.operation_get(operation_id=operation_id)
    discard = checked(request, "discard_partial")
    op = services.operation_cancel(operation=op, user=request.user, discard_partial=discard)
    verb = op.get_kind_display()
    if op.model_id is None:
        text = "cancelled" if op.state == OperationState.CANCELLED else "stops after this delete"
        return store_action_response(request, message=f"{verb} of the models store {text}.")
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
    return action_response(request, card_of(op.model.key), level="info", message=message)


@superuser_required
@require_POST
@maps_errors
def operation_retry(request: HttpRequest, operation_id: int) -> HttpResponse:
    op = selectors.operation_get(operation_id=operation_id)
    op = services.operation_retry(operation=op, user=request.user)
    if op.model_id is None:
        message = f"{op.get_kind_display()} of the models store queued again."
        return store_action_response(request, message=message, level="success")
    message = f"{op.get_kind_display()} of {op.model.name} queued again; it resumes."
    return action_response(request, card_of(op.model.key), level="success", message=message)
