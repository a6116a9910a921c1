"""Settings > Models: the "+ Add custom" dialog (the Semantik design's v2) and removing an entry.

Thin: services/custom_models.py checks the repo against the hub and owns the rows. The
dialog is one template for each step (the form, the inspected files, an error inline),
swapped into #dialog-slot; without JavaScript it is a page of its own.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from . import selectors
from .errors import InvalidInput, ModelyardError
from .models import ModelType
from .registry import POOLING_MODES
from .services import custom_models
from .views_common import ERROR_HEADER, maps_errors, superuser_required, with_toast

FIELDS = (
    "repo_id", "revision", "type", "name", "dimension", "pooling", "query_prefix",
    "document_prefix", "instruction",
)  # fmt: skip


def _form(request: HttpRequest) -> dict:
    data = request.POST if request.method == "POST" else request.GET
    form = {name: data.get(name, "").strip() for name in FIELDS}
    # Prefixes keep their trailing space ("query: "): it is part of the prefix.
    for name in ("query_prefix", "document_prefix", "instruction"):
        form[name] = data.get(name, "").replace("\r\n", "\n")
    form["revision"] = form["revision"] or "main"
    form["type"] = form["type"] if form["type"] in ModelType.values else ModelType.EMBEDDING
    form["files"] = data.getlist("files")
    return form


def _dimension(value: str) -> int | None:
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(
            "dimension must be a whole number.", details={"field": "dimension"}
        ) from None


def _dialog(request: HttpRequest, form: dict, *, inspection=None, error=None) -> HttpResponse:
    context = {
        "form": form,
        "inspection": inspection,
        "error": error,
        "types": ModelType.choices,
        "poolings": POOLING_MODES,
        "page_href": reverse("models:page"),
        "advanced_open": any(form.get(n) for n in ("dimension", "pooling", "query_prefix",
                                                    "document_prefix", "instruction")),
    }  # fmt: skip
    status = error.status if error is not None else 200
    template = "modelyard/_custom_dialog.html" if request.htmx else "modelyard/custom_page.html"
    response = render(request, template, context, status=status)
    if error is not None:
        response[ERROR_HEADER] = error.code  # live.js swaps it although it is a 4xx/5xx
    return response


@superuser_required
@require_GET
def custom_dialog(request: HttpRequest) -> HttpResponse:
    """Render the empty "+ Add custom" dialog."""
    return _dialog(request, _form(request))


@superuser_required
@require_POST
def custom_inspect(request: HttpRequest) -> HttpResponse:
    """Ask the hub about the repo; the dialog lists its GGUF files with sizes to choose."""
    form = _form(request)
    try:
        inspection = custom_models.custom_repo_inspect(
            repo_id=form["repo_id"], revision=form["revision"]
        )
    except ModelyardError as exc:
        return _dialog(request, form, error=exc)
    if not form["files"] and len(inspection.gguf_files) == 1:
        form["files"] = [inspection.gguf_files[0].path]
    if inspection.types and form["type"] not in inspection.types:
        form["type"] = inspection.types[0]
    return _dialog(request, form, inspection=inspection)


@superuser_required
@require_POST
def custom_add(request: HttpRequest) -> HttpResponse:
    """Add the entries; back to the list of their type, or the dialog with the error."""
    form = _form(request)
    try:
        models = custom_models.custom_model_add(
            repo_id=form["repo_id"],
            type=form["type"],
            revision=form["revision"],
            files=form["files"],
            name=form["name"] or None,
            dimension=_dimension(form["dimension"]),
            pooling=form["pooling"] or None,
            query_prefix=form["query_prefix"] or None,
            document_prefix=form["document_prefix"] or None,
            instruction=form["instruction"] or None,
            user=request.user,
        )
    except ModelyardError as exc:
        inspection = None
        if form["files"]:  # keep the offered files on screen with the error
            try:
                inspection = custom_models.custom_repo_inspect(
                    repo_id=form["repo_id"], revision=form["revision"]
                )
            except ModelyardError:
                inspection = None
        return _dialog(request, form, inspection=inspection, error=exc)
    names = ", ".join(m.name for m in models)
    messages.success(request, f"Added {names}: not installed yet. Download it from its card.")
    target = reverse("models:page") + f"?type={models[0].type}"
    if request.htmx:
        return HttpResponseClientRedirect(target)
    return redirect(target)


@superuser_required
@require_POST
@maps_errors
def custom_remove(request: HttpRequest, key: str) -> HttpResponse:
    """Remove a custom or local entry that is not installed; its card goes."""
    model = selectors.model_get(key=key)
    custom_models.custom_model_remove(model=model, user=request.user)
    message = f"Removed the entry {model.name}."
    if not request.htmx:
        messages.success(request, message)
        return redirect(reverse("models:page") + f"?type={model.type}")
    response = HttpResponse("")  # swapped over the card: it goes
    return with_toast(response, "success", message)
