"""Runtime reads: what is loaded where (Ollama's `ps`), and the hosts that can load."""

from __future__ import annotations

from ..models import LIVE_RUNTIME_STATES, ProcessHeartbeat, ProcessRole, RuntimeInstance
from .health import heartbeat_fresh_since


def runtime_instances(*, live_only: bool = False):
    """Return the runtime instances with their models, by host then age."""
    qs = RuntimeInstance.objects.select_related("model").order_by("host", "created_at", "id")
    if live_only:
        qs = qs.filter(state__in=LIVE_RUNTIME_STATES)
    return qs


def instance_payload(instance: RuntimeInstance) -> dict:
    """Return what every client sees of a runtime instance (API, websocket, page)."""

    def iso(value):
        return value.isoformat() if value else None

    return {
        "id": instance.id,
        "model": instance.model.key,
        "name": instance.model.name,
        "type": instance.model.type,
        "host": instance.host,
        "state": instance.state,
        "pid": instance.pid,
        "n_ctx": instance.n_ctx,
        "n_gpu_layers": instance.n_gpu_layers,
        "threads": instance.n_threads,
        "embedding": instance.embedding,
        "memory_estimate": instance.memory_estimate,
        "rss": instance.rss,
        "keep_alive": instance.keep_alive,
        "loaded_at": iso(instance.loaded_at),
        "load_seconds": instance.load_seconds,
        "last_request_at": iso(instance.last_request_at),
        "expires_at": iso(instance.expires_at),
        "requests_served": instance.requests_served,
        "in_flight": instance.in_flight,
        "error_code": instance.error_code,
        "error_message": instance.error_message,
    }


def runtime_host_list() -> list[dict]:
    """Return every runtime supervisor with a heartbeat row, with its host's facts."""
    fresh_since = heartbeat_fresh_since()
    counts: dict[str, int] = {}
    for host in RuntimeInstance.objects.filter(state__in=LIVE_RUNTIME_STATES).values_list(
        "host", flat=True
    ):
        counts[host] = counts.get(host, 0) + 1
    hosts = []
    for beat in ProcessHeartbeat.objects.filter(role=ProcessRole.RUNTIME).order_by("host", "pid"):
        facts = beat.facts or {}
        hosts.append(
            {
                "host": beat.host,
                "pid": beat.pid,
                "fresh": beat.beat_at >= fresh_since,
                "beat_at": beat.beat_at.isoformat(),
                "ram_total": facts.get("ram_total"),
                "ram_available": facts.get("ram_available"),
                "budget": facts.get("budget"),
                "threads": facts.get("threads"),
                "max_loaded": facts.get("max_loaded"),
                "loaded": counts.get(beat.host, 0),
            }
        )
    return hosts


def runtime_payload() -> dict:
    """Return the whole runtime picture: hosts and instances (two queries and one per host)."""
    return {
        "hosts": runtime_host_list(),
        "instances": [instance_payload(i) for i in runtime_instances()],
    }
