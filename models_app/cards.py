"""What a card on the Models page shows: one model, its collections, operations and runtime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.template.defaultfilters import filesizeformat
from django.urls import reverse

from . import selectors
from .errors import ModelyardError
from .models import (
    Model,
    Operation,
    OperationKind,
    OperationState,
    RuntimeInstance,
    RuntimeState,
)
from .services.runtime import RUNNABLE_TYPES

UNSUCCESSFUL = (OperationState.FAILED, OperationState.CANCELLED, OperationState.INTERRUPTED)
# Kinds whose failure matters while the model is installed (a download's, while it is not).
INSTALLED_KINDS = (
    OperationKind.DELETE, OperationKind.LOAD, OperationKind.UNLOAD, OperationKind.EXPORT,
    OperationKind.VERIFY, OperationKind.REPAIR, OperationKind.UPDATE,
)  # fmt: skip
OPERATION_STATUS = {
    OperationKind.DOWNLOAD: "Downloading",
    OperationKind.DELETE: "Deleting",
    OperationKind.LOAD: "Loading",
    OperationKind.UNLOAD: "Unloading",
    OperationKind.IMPORT: "Importing",
    OperationKind.EXPORT: "Exporting",
    OperationKind.VERIFY: "Verifying",
    OperationKind.REPAIR: "Repairing",
    OperationKind.UPDATE: "Updating",
}


@dataclass
class Card:
    """One model as the page shows it; built for a whole page in a constant number of queries."""

    model: Model
    collections: list[str]
    operation: Operation | None  # the active one (queued or running)
    failure: Operation | None  # the latest one, when it ended unsuccessfully and still matters
    latest: Operation | None  # the active one, else the latest one
    error: ModelyardError | None = None  # the error of the request that rendered the card
    # Its runtime instance: the live one, else the failed one (kept until the next load).
    runtime: RuntimeInstance | None = None
    # Whether it fits the runtime's memory at the default n_ctx (selectors.model_fit).
    fit: dict | None = None

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
    def damaged_files(self) -> list[str]:
        """Return the files the last verify found damaged (Repair fetches them again)."""
        return list(self.installation.damaged_files) if self.installed else []

    @property
    def update_files(self) -> list[str]:
        """Return the files an available update changes ([] when there is none)."""
        if not self.installed or not self.installation.update_commit:
            return []
        return [f.get("path", "") for f in self.installation.update_files]

    @property
    def memory(self) -> list[dict]:
        return [
            {**row, "display": filesizeformat(row["bytes"])}
            for row in selectors.memory_table(self.model)
        ]

    @property
    def fit_display(self) -> str:
        """Say whether the model fits the runtime's memory, with both numbers."""
        fit = self.fit or {}
        words = {"fits": "Fits", "tight": "Tight", "does_not_fit": "Does not fit"}
        if fit.get("status") not in words:
            return "Unknown until its GGUF header is read (installed, or from the registry)"
        return (
            f"{words[fit['status']]}: needs about {filesizeformat(fit['required'])} of "
            f"{filesizeformat(fit['capacity'])} at n_ctx {fit['n_ctx']}"
        )

    @property
    def size_display(self) -> str:
        # A split GGUF says so: it is installed only with every shard.
        shards = len(self.model.file_patterns) if self.model.gguf_file else 1
        split = f" in {shards} shards" if shards > 1 else ""
        if self.installed:
            return f"{filesizeformat(self.installation.size_on_disk)} on disk{split}"
        if self.model.download_size:
            return f"{filesizeformat(self.model.download_size)} download{split}"
        return f"Download size unknown{split}"

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
            return OPERATION_STATUS.get(op.kind, f"{op.get_kind_display()} running")
        if self.damaged_files:
            return "Damaged: " + ", ".join(self.damaged_files)
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

    # --- the runtime ----------------------------------------------------------------------

    @property
    def runnable(self) -> bool:
        """Return True if the built-in runtime runs this entry (services.runtime's rule)."""
        return model_runnable(self.model)

    @property
    def runtime_state(self) -> str:
        return self.runtime.state if self.runtime is not None else ""

    @property
    def loaded(self) -> bool:
        return self.runtime is not None and self.runtime.is_live

    @property
    def runtime_display(self) -> str:
        """Return the card's runtime line: where it is loaded and what it holds, or not."""
        instance = self.runtime
        if instance is None:
            return "Not loaded"
        # The memory it holds moves with every measurement: the Runtime panel shows it live.
        where = f"on {instance.host}"
        if instance.state == "ready":
            return f"Loaded {where}"
        if instance.state == "failed":
            return f"Runner failed {where}"
        return f"{instance.get_state_display()} {where}…"


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


def model_runnable(model: Model) -> bool:
    """Return True for a GGUF entry of a type the built-in runtime serves."""
    return bool(model.gguf_file) and model.type in RUNNABLE_TYPES


def runtime_by_model(instances) -> dict[int, RuntimeInstance]:
    """Return each model's instance to show: the live one, else the newest failed one."""
    chosen: dict[int, RuntimeInstance] = {}
    for instance in instances:
        current = chosen.get(instance.model_id)
        if (
            current is None
            or (instance.is_live and not current.is_live)
            or (instance.is_live == current.is_live and instance.created_at > current.created_at)
        ):
            chosen[instance.model_id] = instance
    return chosen


def build_cards(models: list[Model], *, runtime_instances=None) -> list[Card]:
    """Return the cards of these models (annotated by selectors.model_queryset).

    `runtime_instances`: every instance, when the caller has read them already (the full
    page's Runtime panel); else they are read here, in one query, and only when a card
    can be loaded at all (an installed GGUF entry of a runnable type).
    """
    ids = [m.id for m in models]
    names = selectors.collection_names_by_model(model_ids=ids)
    operations = selectors.current_operations_by_model(model_ids=ids)
    if runtime_instances is None:
        runnable = [m.id for m in models if hasattr(m, "installation") and model_runnable(m)]
        runtime_instances = (
            RuntimeInstance.objects.filter(model_id__in=runnable) if runnable else []
        )
    runtime = runtime_by_model(runtime_instances)
    # One read of the hosts' memory for the whole page, and only when a card shows a fit.
    capacity = selectors.runtime_capacity() if any(m.gguf_file for m in models) else None
    cards = []
    for model in models:
        op = operations.get(model.id)
        installed = hasattr(model, "installation")
        active = op if op is not None and op.is_active else None
        failure = None
        if op is not None and op.state in UNSUCCESSFUL:
            # A failed download matters while the model is missing, a failed delete (or
            # load) while it is still there.
            relevant = installed if op.kind in INSTALLED_KINDS else not installed
            failure = op if relevant else None
        card = Card(model, names.get(model.id, []), active, failure, op)
        card.runtime = runtime.get(model.id)
        if capacity is not None and model.gguf_file:
            card.fit = selectors.model_fit(model, capacity=capacity)
        cards.append(card)
    return cards


@dataclass
class RuntimeRow:
    """One line of the Runtime panel: a loaded (or failed) model on one host."""

    instance: RuntimeInstance
    now: datetime

    @property
    def model(self) -> Model:
        return self.instance.model

    @property
    def page_href(self) -> str:
        return model_page_href(self.instance.model)

    @property
    def expires_in(self) -> int | None:
        """Return the seconds left before the keep-alive unloads it (live.js counts down)."""
        instance = self.instance
        if instance.state != RuntimeState.READY or instance.expires_at is None:
            return None
        return max(0, int((instance.expires_at - self.now).total_seconds()))

    @property
    def expires_display(self) -> str:
        instance = self.instance
        if instance.state != RuntimeState.READY:
            return "—"
        if instance.keep_alive < 0:
            return "never"
        left = self.expires_in
        if left is None:
            return "—"
        if instance.in_flight:
            # Never expired while it serves: the keep-alive restarts when the request ends.
            return "after its requests"
        return f"in {_duration(left)}" if left else "now"

    @property
    def memory_delta(self) -> str:
        """Return how far the measured RSS is from the estimate ("+4%"), or ""."""
        estimate, rss = self.instance.memory_estimate, self.instance.rss
        if not estimate or not rss:
            return ""
        return f"{round(100 * (rss - estimate) / estimate):+d}%"

    @property
    def unloadable(self) -> bool:
        # A loading instance's load holds the model (an unload would be refused: 409), and
        # a failed one holds nothing: the next load replaces it.
        return self.instance.state == RuntimeState.READY


def runtime_rows(instances, *, now: datetime) -> list[RuntimeRow]:
    return [RuntimeRow(instance, now) for instance in instances]
