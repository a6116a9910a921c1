"""What a card on the Models page shows: one model, its collections and its operations."""

from __future__ import annotations

from dataclasses import dataclass

from django.template.defaultfilters import filesizeformat
from django.urls import reverse

from . import selectors
from .errors import ModelyardError
from .models import Model, Operation, OperationKind, OperationState

UNSUCCESSFUL = (OperationState.FAILED, OperationState.CANCELLED, OperationState.INTERRUPTED)


@dataclass
class Card:
    """One model as the page shows it; built for a whole page in a constant number of queries."""

    model: Model
    collections: list[str]
    operation: Operation | None  # the active one (queued or running)
    failure: Operation | None  # the latest one, when it ended unsuccessfully and still matters
    latest: Operation | None  # the active one, else the latest one
    error: ModelyardError | None = None  # the error of the request that rendered the card

    @property
    def installation(self):
        return getattr(self.model, "installation", None)

    @property
    def installed(self) -> bool:
        return self.installation is not None

    @property
    def deletable(self) -> bool:
        return self.installed and self.installation.location == "primary"

    @property
    def memory(self) -> list[dict]:
        return [
            {**row, "display": filesizeformat(row["bytes"])}
            for row in selectors.memory_table(self.model)
        ]

    @property
    def size_display(self) -> str:
        if self.installed:
            return f"{filesizeformat(self.installation.size_on_disk)} on disk"
        if self.model.download_size:
            return f"{filesizeformat(self.model.download_size)} download"
        return "Download size unknown"

    @property
    def parameters_display(self) -> str:
        return _count(self.model.parameter_count)

    @property
    def status(self) -> str:
        op = self.operation
        if op is not None:
            if op.cancel_requested:
                return "Cancelling…"
            if op.state == OperationState.QUEUED:
                return f"{op.get_kind_display()} queued"
            return {"download": "Downloading", "delete": "Deleting"}.get(
                op.kind, f"{op.get_kind_display()} running"
            )
        if self.installed:
            return "Installed" if self.deletable else "Installed (legacy cache, read-only)"
        return "Available"

    @property
    def progress(self) -> dict | None:
        op = self.operation
        if op is None:
            return None
        return progress_figures(op)

    @property
    def failure_title(self) -> str:
        op = self.failure
        return f"{op.get_kind_display()} {op.get_state_display().lower()}" if op else ""

    @property
    def failure_code(self) -> str:
        op = self.failure
        if op is None:
            return ""
        return op.error_code or ("ERR_CANCELLED" if op.state == OperationState.CANCELLED else "")

    @property
    def failure_message(self) -> str:
        op = self.failure
        if op is None:
            return ""
        if op.error_message:
            return op.error_message
        if op.kind == OperationKind.DOWNLOAD:
            return "The partial files stay; Retry resumes from them."
        return ""

    @property
    def last_state(self) -> str:
        return self.latest.state if self.latest is not None else ""

    @property
    def page_href(self) -> str:
        return model_page_href(self.model)


def progress_figures(op: Operation) -> dict:
    """Return the progress texts of an operation; live.js formats the same way."""
    total = op.bytes_total or 0
    percent = min(100, 100 * op.bytes_done // total) if total else None
    done = filesizeformat(op.bytes_done)
    return {
        "percent": percent,
        "bytes": f"{done} of {filesizeformat(total)}" if total else (done if op.bytes_done else ""),
        "speed": f"{filesizeformat(op.speed)}/s" if op.speed else "",
        "eta": f"{_duration(op.eta_seconds)} left" if op.eta_seconds else "",
    }


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _count(n: int | None) -> str:
    if not n:
        return ""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + suffix
    return str(n)


def model_page_href(model: Model) -> str:
    return f"{reverse('models:page')}?type={model.type}#model-{model.key}"


def build_cards(models: list[Model]) -> list[Card]:
    """Return the cards of these models (annotated by selectors.model_queryset)."""
    ids = [m.id for m in models]
    names = selectors.collection_names_by_model(model_ids=ids)
    operations = selectors.current_operations_by_model(model_ids=ids)
    cards = []
    for model in models:
        op = operations.get(model.id)
        installed = hasattr(model, "installation")
        active = op if op is not None and op.is_active else None
        failure = None
        if op is not None and op.state in UNSUCCESSFUL:
            # A failed download matters while the model is missing, a failed delete
            # while it is still there.
            relevant = installed if op.kind == OperationKind.DELETE else not installed
            failure = op if relevant else None
        cards.append(Card(model, names.get(model.id, []), active, failure, op))
    return cards
