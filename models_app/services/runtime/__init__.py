"""The runtime: load and unload GGUF models, route requests to the runner that has one.

Loads and unloads are operations (kinds `load`, `unload`), exclusive per model like every
other; they are not enqueued: the runtime supervisor of the chosen host claims them and
runs their executors in its own process, because it owns the runner processes
(supervisor.py, models_app/runtime/). A loaded model is a `RuntimeInstance` row; at most
one live instance per model across every host. By concern:

- common: what the runtime runs (GGUF entries of a runnable type), the hosts, estimates;
- starting: `runtime_load_start`, `runtime_unload_start`, a delete's `runtime_unload_for`,
  and the sweep of loads queued for a host without a runtime;
- executing: the `load` and `unload` executors (room made by evicting the least recently
  used idle instance), a runner's death;
- requests: the /v1 proxy's path (`runtime_route_ready`: a loaded model's request in two
  statements; `runtime_route`: JIT load, requests counted in flight;
  `runtime_request_end`: keep-alive renewed, the installation's use recorded);
- supervisor: `manage.py runtime`'s loop.
"""

from . import executing  # noqa: F401  (registers the load and unload executors)
from .common import (
    EMBEDDING_TYPES,
    IN_FLIGHT_LEASE,
    RUNNABLE_TYPES,
    runtime_check_runnable,
    runtime_estimate,
    runtime_host_ring,
    runtime_hosts,
)
from .executing import runtime_runner_died, runtime_runners_attach
from .requests import (
    Route,
    runtime_model_for,
    runtime_request_end,
    runtime_route,
    runtime_route_ready,
)
from .starting import (
    LoadResult,
    runtime_load_start,
    runtime_orphans_fail,
    runtime_unload_for,
    runtime_unload_start,
)

__all__ = [
    "EMBEDDING_TYPES",
    "IN_FLIGHT_LEASE",
    "RUNNABLE_TYPES",
    "LoadResult",
    "Route",
    "runtime_check_runnable",
    "runtime_estimate",
    "runtime_host_ring",
    "runtime_hosts",
    "runtime_load_start",
    "runtime_model_for",
    "runtime_orphans_fail",
    "runtime_request_end",
    "runtime_route",
    "runtime_route_ready",
    "runtime_runner_died",
    "runtime_runners_attach",
    "runtime_unload_for",
    "runtime_unload_start",
]
