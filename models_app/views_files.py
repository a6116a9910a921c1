"""Settings > Models, the files part: the Import dialog and a card's Export action.

Thin like the rest of the page (models_app/views_common.py, whose access and action responses
these use): each calls services/imports.py or services/exports.py. An error re-renders
its dialog with the code and message inline, so nothing typed is lost.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget

from . import selectors
from .cards import model_page_href
from .errors import ModelyardError
from .models import ModelType
from .services.exports import export_start
from .services.imports import import_start
from .store.local import EXPORT_MODES, IMPORT_MODES
from .views_common import ERROR_HEADER, action_response, card_of, superuser_required, with_toast

FIELD_MAX = 4096


def _field(request: HttpRequest, name: str, default: str = "") -> str:
    return request.POST.get(name, default).replace("\x00", "").strip()[:FIELD_MAX]


def _dialog(request, template: str, context: dict, error: ModelyardError | None = None):
    """Render a dialog: in the dialog slot for htmx, as its own page without JavaScript."""
    context = {**context, "error": error, "standalone": not request.htmx}
    status = error.status if error is not None else 200
    if not request.htmx:
        return render(
            request, "modelyard/files_page.html", {**context, "dialog": template}, status=status
        )
    response = render(request, template, context, status=status)
    if error is not None:
        response = retarget(reswap(response, "innerHTML"), "#dialog-slot")
        response[ERROR_HEADER] = error.code
        response = with_toast(response, "error", f"{error.code}: {error.message}")
    return response


@superuser_required
@require_http_methods(["GET", "POST"])
def model_import(request: HttpRequest) -> HttpResponse:
    """GET: the Import dialog. POST: queue the import; then the page shows the new entry."""
    form = {
        "path": _field(request, "path"),
        "type": _field(request, "type", "llm"),
        "name": _field(request, "name"),
        "key": _field(request, "key"),
        "mode": _field(request, "mode", "copy"),
    }
    context = {"form": form, "types": ModelType.choices, "modes": IMPORT_MODES}
    template = "modelyard/_import_dialog.html"
    if request.method == "GET":
        return _dialog(request, template, context)
    try:
        result = import_start(
            path=form["path"],
            type=form["type"],
            name=form["name"],
            key=form["key"] or None,
            mode=form["mode"],
            user=request.user,
        )
    except ModelyardError as exc:
        return _dialog(request, template, context, exc)
    model = result.operation.model
    _, message = result.toast(model.name)
    messages.add_message(request, messages.SUCCESS if result.created else messages.INFO, message)
    # A new entry: the page of its type shows its card (with the import's progress).
    if request.htmx:
        return HttpResponseClientRedirect(model_page_href(model))
    return redirect(model_page_href(model))


@superuser_required
@require_http_methods(["GET", "POST"])
def model_export(request: HttpRequest, key: str) -> HttpResponse:
    """GET: the Export dialog of an installed model. POST: queue the export."""
    try:
        model = selectors.model_get(key=key)
    except ModelyardError:
        return HttpResponse(status=404)
    form = {"dest": _field(request, "dest"), "mode": _field(request, "mode", "copy")}
    context = {
        "form": form,
        "model": model,
        "modes": EXPORT_MODES,
        "page_href": model_page_href(model),
    }
    template = "modelyard/_export_dialog.html"
    if request.method == "GET":
        return _dialog(request, template, context)
    try:
        result = export_start(model=model, dest=form["dest"], mode=form["mode"], user=request.user)
    except ModelyardError as exc:
        return _dialog(request, template, context, exc)
    level, message = result.toast(model.name)
    return action_response(request, card_of(key), level=level, message=message)
