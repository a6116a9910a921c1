"""Hardware fit: the memory a runtime has, whether each model fits it, which model to pick.

The capacity comes from the runtime supervisors' heartbeats (each tells its host's RAM),
or from this host when none runs. A model's requirement is the estimate of
runtime/memory.py at the default n_ctx, from its GGUF facts (the header of its installed
file, or the registry's); an entry without facts or figures is "unknown".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

from ..errors import FormatError, InsufficientRam, NotFound
from ..models import Model, ProcessHeartbeat, ProcessRole
from ..phrasing import type_label
from ..runtime.host import host_budget, host_budget_set, host_reserve, host_room
from ..runtime.memory import context_within, host_memory, memory_estimate, memory_fit
from .health import heartbeat_fresh_since
from .models import model_queryset

NOT_RUNNABLE = "not_runnable"
UNKNOWN = "unknown"
# The values a fit's status takes, as the API documents them.
FIT_STATUSES = ("fits", "tight", "does_not_fit", UNKNOWN, NOT_RUNNABLE)


@dataclass(frozen=True)
class Capacity:
    """The memory the runtime of one host may use for models, and where the figure is from.

    `bytes` (what a card's fit is measured against) and `usable` (what a load may have
    now) are runtime/host.py's `host_budget` and `host_room` of the host's facts: the
    rule the load's refusal and the eviction use too.
    """

    bytes: int
    usable: int
    host: str
    source: str  # "runtime": a fresh supervisor heartbeat; "this host": no runtime runs
    ram_total: int
    ram_available: int
    reserve: int
    budget: int | None  # RUNTIME_MEMORY_BUDGET, when it is set

    @classmethod
    def of(cls, facts: dict, *, host: str, source: str) -> Capacity:
        return cls(
            bytes=host_budget(facts),
            usable=host_room(facts),
            host=host,
            source=source,
            ram_total=facts["ram_total"],
            ram_available=facts["ram_available"],
            reserve=host_reserve(facts),
            budget=host_budget_set(facts),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def runtime_capacity() -> Capacity:
    """Return the host whose runtime may hold the most, from fresh runtime heartbeats.

    One query. Each host counts once (its freshest beat); a beat without RAM figures is
    passed over. With no runtime running, this host's own RAM stands for it.
    """
    beats = (
        ProcessHeartbeat.objects.filter(
            role=ProcessRole.RUNTIME, beat_at__gte=heartbeat_fresh_since()
        )
        .order_by("host", "-beat_at")
        .values("host", "facts")
    )
    best: Capacity | None = None
    seen: set[str] = set()
    for beat in beats:
        if beat["host"] in seen:
            continue
        seen.add(beat["host"])
        facts = beat["facts"] or {}
        total, available = facts.get("ram_total"), facts.get("ram_available")
        if not isinstance(total, int) or not isinstance(available, int):
            continue
        candidate = Capacity.of(facts, host=beat["host"], source="runtime")
        if best is None or candidate.bytes > best.bytes:
            best = candidate
    if best is not None:
        return best
    memory = host_memory()
    facts = {"ram_total": memory.total, "ram_available": memory.available}
    return Capacity.of(facts, host=settings.HOST_NAME, source="this host")


def _get(model: Model | dict, name: str) -> Any:
    return model[name] if isinstance(model, dict) else getattr(model, name)


def model_n_ctx(model: Model | dict, *, n_ctx: int | None = None) -> int:
    """Return the n_ctx a fit is measured at: n_ctx (None: RUNTIME_DEFAULT_N_CTX), within
    the model's trained context."""
    n_ctx = n_ctx or settings.RUNTIME_DEFAULT_N_CTX
    return context_within(facts=_get(model, "gguf_facts") or {}, n_ctx=n_ctx)


def model_required(model: Model | dict, *, n_ctx: int | None = None) -> int | None:
    """Return the bytes a model needs loaded at `model_n_ctx(model, n_ctx=n_ctx)`.

    From its GGUF facts (weights falling back to the download size); without facts, the
    stored ram_required stands for the default n_ctx. None when nothing tells.
    """
    requested = n_ctx or settings.RUNTIME_DEFAULT_N_CTX
    facts = _get(model, "gguf_facts") or {}
    if facts:
        try:
            estimate = memory_estimate(
                facts=facts,
                n_ctx=context_within(facts=facts, n_ctx=requested),
                file_size=_get(model, "download_size"),
            )
        except FormatError:
            pass
        else:
            return estimate.total
    ram_required = _get(model, "ram_required")
    if ram_required is not None and requested == settings.RUNTIME_DEFAULT_N_CTX:
        return ram_required
    return None


def model_fit(
    model: Model | dict, *, capacity: int | Capacity, n_ctx: int | None = None
) -> dict[str, Any]:
    """Return whether a model fits the capacity: status, required and capacity bytes, n_ctx.

    Status fits / tight / does_not_fit (runtime/memory.py's memory_fit), "unknown" when
    nothing tells what it needs, "not_runnable" for an entry without a GGUF file (the
    built-in runtime runs GGUF files only). `model` is a Model or a list row (a dict).
    """
    capacity_bytes = capacity.bytes if isinstance(capacity, Capacity) else capacity
    n_ctx = model_n_ctx(model, n_ctx=n_ctx)
    fit = {"status": UNKNOWN, "required": None, "capacity": capacity_bytes, "n_ctx": n_ctx}
    if not _get(model, "gguf_file"):
        return fit | {"status": NOT_RUNNABLE}
    required = model_required(model, n_ctx=n_ctx)
    if required is None:
        return fit
    return fit | {
        "status": memory_fit(required=required, capacity=capacity_bytes),
        "required": required,
    }


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def _models_of(type: str) -> str:
    """Return "LLMs", "embedding models", "reranker models", "SPLADE models"."""
    return "LLMs" if type == "llm" else f"{type_label(type)} models"


def model_recommended(*, type: str) -> dict[str, Any]:
    """Return the model the Vibrant spec's selection picks for a type, and why.

    usable = available RAM - RUNTIME_MEMORY_RESERVE (within the budget: `host_room`), on the
    host with the largest runtime capacity; the candidates are the runnable (GGUF) entries
    of the type whose requirement at the default n_ctx is at most that; the recommended
    ones among them if any fits (the spec's preference), else all of them; the largest
    wins. Raise NotFound when no entry of the type can be sized, InsufficientRam (naming
    both numbers and the smallest entry) when none fits.
    """
    capacity = runtime_capacity()
    usable = capacity.usable
    sized = []
    for model in model_queryset().filter(type=type).exclude(gguf_file="").order_by("key"):
        required = model_required(model)
        if required is not None:
            sized.append((required, model))
    if not sized:
        raise NotFound(
            f"The registry has no {_models_of(type)} that the built-in runtime runs with a "
            "known memory requirement.",
            details={"type": type},
        )
    where = (
        f"{_gib(capacity.ram_available)} available on {capacity.host} less the "
        f"{_gib(capacity.reserve)} reserve"
    )
    if capacity.budget is not None:
        where += f", within the {_gib(capacity.budget)} budget"
    candidates = [(required, m) for required, m in sized if required <= usable]
    if not candidates:
        required, smallest = min(sized, key=lambda pair: pair[0])
        raise InsufficientRam(
            f"None of the {_models_of(type)} fits in memory: the smallest, {smallest.key}, "
            f"needs {_gib(required)} at n_ctx {model_n_ctx(smallest)}, and {_gib(usable)} is "
            f"usable ({where}).",
            details={
                "required": required,
                "usable": usable,
                "model": smallest.key,
                "n_ctx": model_n_ctx(smallest),
                "host": capacity.host,
            },
        )
    recommended = [(r, m) for r, m in candidates if m.recommended]
    pool = recommended or candidates
    required, chosen = max(pool, key=lambda pair: (pair[0], pair[1].key))
    among = (
        f"the recommended {_models_of(type)} that fit"
        if recommended
        else f"the {_models_of(type)} that fit (no recommended one does)"
    )
    n_ctx = model_n_ctx(chosen)
    reason = (
        f"{chosen.name} is the largest of {among}: it needs {_gib(required)} at n_ctx "
        f"{n_ctx}, and {_gib(usable)} is usable ({where})."
    )
    return {
        "model": chosen,
        "reason": reason,
        "required": required,
        "usable": usable,
        "n_ctx": n_ctx,
        "capacity": capacity,
    }
