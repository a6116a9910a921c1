import hashlib
import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from .constants import MODEL_KEY_RE, REPO_ID_RE
from .errors import InvalidInput
from .gguf_split import gguf_file_names


class ModelType(models.TextChoices):
    EMBEDDING = "embedding", "Embedding"
    LLM = "llm", "LLM"
    RERANKER = "reranker", "Reranker"
    SPLADE = "splade", "SPLADE"


class ModelSource(models.TextChoices):
    CURATED = "curated", "Curated"
    CUSTOM = "custom", "Custom"  # a user's Hub repo, added by repo id
    LOCAL = "local", "Local import"  # a file or folder imported from disk


class Model(models.Model):
    """One registry entry: a repo at a revision and the files one use of it needs.

    Entries are addressed by `key` (a slug), never by repo id: one repo can carry
    several entries (a GGUF repo with a Q4_K_M and a Q5_K_M file).
    """

    key = models.CharField(max_length=200, unique=True, validators=[RegexValidator(MODEL_KEY_RE)])
    repo_id = models.CharField(
        max_length=200, db_index=True, validators=[RegexValidator(REPO_ID_RE)]
    )
    revision = models.CharField(max_length=100, default="main")
    type = models.CharField(max_length=16, choices=ModelType.choices, db_index=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    family = models.CharField(max_length=100, blank=True)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    quantization = models.CharField(max_length=50, blank=True)
    gguf_file = models.CharField(max_length=300, blank=True)
    allow_patterns = models.JSONField(default=list, blank=True)
    download_size = models.BigIntegerField(null=True, blank=True)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    embedding_dimension = models.PositiveIntegerField(null=True, blank=True)
    pooling = models.CharField(max_length=20, blank=True)
    query_prefix = models.TextField(blank=True)
    document_prefix = models.TextField(blank=True)
    memory_estimates = models.JSONField(default=dict, blank=True)
    # The GGUF header's facts (architecture, block_count, head counts, context_length, ...):
    # from the local file once installed, else from the registry (models_app/gguf.py).
    gguf_facts = models.JSONField(default=dict, blank=True)
    ram_required = models.BigIntegerField(null=True, blank=True)
    sha256 = models.JSONField(default=dict, blank=True)
    recommended = models.BooleanField(default=False, db_index=True)
    tags = models.JSONField(default=list, blank=True)
    license = models.CharField(max_length=100, blank=True)
    source = models.CharField(
        max_length=10, choices=ModelSource.choices, default=ModelSource.CURATED
    )
    # False once a curated entry left the YAML files; the row stays while installed.
    in_registry = models.BooleanField(default=True)
    registry_file = models.CharField(max_length=300, blank=True)
    # Who added a custom or imported entry (None for curated ones).
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Options of a custom entry the design names beside the columns above (instruction, ...).
    options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["type", "name"]
        indexes = [models.Index(fields=["type", "name"], name="model_type_name_idx")]

    def __str__(self):
        return f"{self.name} ({self.key})"

    @property
    def file_patterns(self) -> list[str]:
        """Return the file patterns this entry needs from its repo.

        A split GGUF (its gguf_file the first shard, `name-00001-of-00003.gguf`) needs every
        shard. A malformed shard name is refused where entries are made (the registry);
        one that got in anyway stands for itself alone.
        """
        if not self.gguf_file:
            return list(self.allow_patterns)
        try:
            return gguf_file_names(self.gguf_file)
        except InvalidInput:
            return [self.gguf_file]


class StoreLocation(models.TextChoices):
    PRIMARY = "primary", "Models store"
    LEGACY = "legacy", "Legacy cache (read-only)"


class Installation(models.Model):
    """What of a registry entry is on disk, as last reconciled with the store."""

    model = models.OneToOneField(Model, on_delete=models.CASCADE, related_name="installation")
    location = models.CharField(
        max_length=10, choices=StoreLocation.choices, default=StoreLocation.PRIMARY
    )
    commit_hash = models.CharField(max_length=64, blank=True)
    snapshot_path = models.CharField(max_length=1000, blank=True)
    files = models.JSONField(default=list, blank=True)
    size_on_disk = models.BigIntegerField(default=0)
    installed_at = models.DateTimeField()
    verified_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Minutes in which the model was used (installation_touch coalesces to one a minute).
    use_count = models.PositiveIntegerField(default=0)
    pinned = models.BooleanField(default=False)
    reconciled_at = models.DateTimeField()
    # The last verify: its checks ([{name, passed, message}]) and the files whose bytes did
    # not match their digest (a non-empty list: the model is damaged; Repair re-fetches them).
    verify_checks = models.JSONField(default=list, blank=True)
    damaged_files = models.JSONField(default=list, blank=True)
    # The last update check: the Hub's commit when a file this entry uses changed there.
    update_checked_at = models.DateTimeField(null=True, blank=True)
    update_commit = models.CharField(max_length=64, blank=True)
    update_files = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["model__name"]

    def __str__(self):
        return f"{self.model.key} @ {self.commit_hash[:8]}"


class UnmanagedRepo(models.Model):
    """A repo found in a store that no registry entry claims."""

    repo_id = models.CharField(max_length=300)
    repo_type = models.CharField(max_length=20, default="model")
    location = models.CharField(
        max_length=10, choices=StoreLocation.choices, default=StoreLocation.PRIMARY
    )
    size_on_disk = models.BigIntegerField(default=0)
    revisions = models.JSONField(default=list, blank=True)
    last_modified = models.DateTimeField(null=True, blank=True)
    reconciled_at = models.DateTimeField()

    class Meta:
        ordering = ["repo_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["repo_type", "repo_id", "location"], name="unmanaged_repo_unique"
            )
        ]

    def __str__(self):
        return self.repo_id


class StoreScan(models.Model):
    """The figures of one reconcile, so that reads never walk the filesystem."""

    scanned_at = models.DateTimeField(db_index=True)
    managed_bytes = models.BigIntegerField(default=0)
    unmanaged_bytes = models.BigIntegerField(default=0)
    unmanaged_count = models.PositiveIntegerField(default=0)
    partial_bytes = models.BigIntegerField(default=0)
    partial_files = models.JSONField(default=list, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    # Bytes of each managed repo folder in the models store, so that a reconcile of one
    # repo after an operation can update the totals without walking the others.
    repo_sizes = models.JSONField(default=dict, blank=True)
    # "full" (start, schedule, button) or the repo folder one operation touched.
    scope = models.CharField(max_length=300, default="full")

    class Meta:
        ordering = ["-scanned_at"]
        get_latest_by = "scanned_at"

    def __str__(self):
        return f"scan {self.scanned_at:%Y-%m-%d %H:%M:%S}"

    @property
    def total_bytes(self) -> int:
        return self.managed_bytes + self.unmanaged_bytes + self.partial_bytes


class OperationKind(models.TextChoices):
    DOWNLOAD = "download", "Download"
    DELETE = "delete", "Delete"
    PRUNE = "prune", "Prune"
    VERIFY = "verify", "Verify"
    REPAIR = "repair", "Repair"
    UPDATE = "update", "Update"
    IMPORT = "import", "Import"
    EXPORT = "export", "Export"
    LOAD = "load", "Load"
    UNLOAD = "unload", "Unload"


# The kinds a host's runtime supervisor runs, never a qcluster worker: it owns the runner
# processes. They are not enqueued; the supervisor of the host in `worker_host` claims them.
RUNTIME_KINDS = (OperationKind.LOAD, OperationKind.UNLOAD)


class OperationState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    INTERRUPTED = "interrupted", "Interrupted"


ACTIVE_STATES = (OperationState.QUEUED, OperationState.RUNNING)
# The one definition of "ended": the live relay, the consumers and the page's script use it.
TERMINAL_STATES = (
    OperationState.SUCCEEDED,
    OperationState.FAILED,
    OperationState.CANCELLED,
    OperationState.INTERRUPTED,
)


class Operation(models.Model):
    """One background job of a registered kind: on a model, or on the whole store (prune).

    `parent` links the deletes a prune (or a download's auto-prune) made to it.
    """

    model = models.ForeignKey(
        Model, null=True, blank=True, on_delete=models.CASCADE, related_name="operations"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    kind = models.CharField(max_length=10, choices=OperationKind.choices)
    state = models.CharField(
        max_length=12, choices=OperationState.choices, default=OperationState.QUEUED
    )
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(null=True, blank=True)
    speed = models.FloatField(null=True, blank=True, help_text="Bytes per second, moving average.")
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    commit_hash = models.CharField(max_length=64, blank=True)
    # What the operation decided before it ran: a download's files, a prune's removals.
    plan = models.JSONField(default=list, blank=True)
    # The figures of its end (bytes freed, models removed), as its completion event has them.
    result = models.JSONField(default=dict, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Asked with the cancel of a download: its partial files go too (not kept for a resume).
    discard_partial = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The process running it (set when it is claimed or begun): the supervisor on that host
    # marks it interrupted the moment that process dies, without waiting for staleness.
    worker_host = models.CharField(max_length=255, blank=True)
    worker_pid = models.PositiveIntegerField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Every write bumps it (QuerySet.update passes Now()): the live relay polls it.
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The database, not a process, guarantees one active operation per model.
            models.UniqueConstraint(
                fields=["model"],
                condition=Q(state__in=["queued", "running"]),
                name="one_active_operation_per_model",
            ),
            # NULLs are distinct in the constraint above: store-wide operations get their own.
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(model__isnull=True, state__in=["queued", "running"]),
                name="one_active_store_operation_per_kind",
            ),
        ]
        indexes = [models.Index(fields=["state", "heartbeat_at"], name="operation_state_hb_idx")]

    def __str__(self):
        return f"{self.kind} {self.target} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def target(self) -> str:
        """Return what the operation works on, for messages: a model key, or the store."""
        return self.model.key if self.model_id else "the models store"


class RuntimeState(models.TextChoices):
    LOADING = "loading", "Loading"
    READY = "ready", "Ready"
    UNLOADING = "unloading", "Unloading"
    FAILED = "failed", "Failed"


LIVE_RUNTIME_STATES = (RuntimeState.LOADING, RuntimeState.READY, RuntimeState.UNLOADING)


class RuntimeInstanceQuerySet(models.QuerySet):
    def update(self, **kwargs):
        # Every write bumps `updated_at` (auto_now does not reach QuerySet.update): the live
        # relay of each web process finds changed instances by it.
        kwargs.setdefault("updated_at", Now())
        return super().update(**kwargs)


class RuntimeInstance(models.Model):
    """One model loaded (or loading) in one runner process on one host.

    At most one live instance per model, whatever the host: every daphne process of every
    host reaches the same runner. A failed instance stays until the model is loaded again.
    """

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="runtime_instances")
    host = models.CharField(max_length=255)
    state = models.CharField(
        max_length=12, choices=RuntimeState.choices, default=RuntimeState.LOADING
    )
    # The load that made it (and the last unload asked of it).
    operation = models.ForeignKey(
        Operation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    pid = models.PositiveIntegerField(null=True, blank=True)
    # Where the web processes reach the runner (RUNTIME_ADVERTISE_ADDRESS of its host).
    address = models.CharField(max_length=255, default="127.0.0.1")
    port = models.PositiveIntegerField(null=True, blank=True)
    # The runner's bearer token: only Modelyard's proxy talks to a runner.
    secret = models.CharField(max_length=64, editable=False)
    n_ctx = models.PositiveIntegerField()
    n_gpu_layers = models.IntegerField(default=0)
    n_threads = models.PositiveIntegerField(default=1)
    embedding = models.BooleanField(default=False)
    memory_estimate = models.BigIntegerField(null=True, blank=True)
    rss = models.BigIntegerField(null=True, blank=True, help_text="Measured resident memory.")
    # Seconds after the last request before it is unloaded; -1 never, 0 after the request.
    keep_alive = models.IntegerField()
    loaded_at = models.DateTimeField(null=True, blank=True)
    load_seconds = models.FloatField(null=True, blank=True)
    last_request_at = models.DateTimeField(null=True, blank=True)
    # None: never (keep_alive -1) or while loading.
    expires_at = models.DateTimeField(null=True, blank=True)
    requests_served = models.PositiveIntegerField(default=0)
    # Requests being served now: an instance with any is never evicted nor expired.
    in_flight = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    objects = RuntimeInstanceQuerySet.as_manager()

    class Meta:
        ordering = ["host", "created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["model"],
                condition=Q(state__in=["loading", "ready", "unloading"]),
                name="one_live_instance_per_model",
            ),
        ]
        indexes = [models.Index(fields=["host", "state"], name="runtime_host_state_idx")]

    def __str__(self):
        return f"{self.model.key} on {self.host} ({self.state})"

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_RUNTIME_STATES


class ProcessRole(models.TextChoices):
    WORKER = "worker", "Worker"
    RUNTIME = "runtime", "Runtime supervisor"


class ProcessHeartbeat(models.Model):
    """The pulse of one long-lived process: a qcluster worker, or a runtime supervisor.

    Each writes its row every PROCESS_HEARTBEAT_INTERVAL seconds; `/healthz` and the status
    endpoint read them. A process that ends cleanly or dies leaves its row behind until its
    supervisor (or the reaper, once it is stale) removes it.
    """

    role = models.CharField(max_length=16, choices=ProcessRole.choices)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    # Its process group: `manage.py run` starts each child as a group leader, so the group
    # names the child a worker belongs to (the qcluster's pid), and dies with it.
    pgid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField(db_index=True)
    # What a runtime supervisor tells about its host: RAM total/available, budget, threads.
    facts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["role", "host", "pid"]
        constraints = [
            # A pid is reused only after its process ended: the new process takes the row.
            models.UniqueConstraint(fields=["host", "pid"], name="one_heartbeat_per_process"),
        ]

    def __str__(self):
        return f"{self.role} {self.host}:{self.pid}"


class ActiveModel(models.Model):
    """The model in use for one type; at most one row per type."""

    type = models.CharField(max_length=16, choices=ModelType.choices, unique=True)
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="+")
    activated_at = models.DateTimeField(auto_now=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["type"]

    def __str__(self):
        return f"{self.type}: {self.model.key}"


class EventKind(models.TextChoices):
    STARTED = "started", "Started"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    INTERRUPTED = "interrupted", "Interrupted"
    DELETED = "deleted", "Deleted"
    SWITCHED = "switched", "Switched"
    LOADED = "loaded", "Loaded"
    UNLOADED = "unloaded", "Unloaded"
    SYNCED = "synced", "Registry synced"
    RECONCILED = "reconciled", "Store reconciled"
    ADDED = "added", "Added"
    REMOVED = "removed", "Removed"
    VERIFIED = "verified", "Verified"
    DAMAGED = "damaged", "Damaged"
    UPDATE_AVAILABLE = "update", "Update available"


class Event(models.Model):
    """An audit line: what happened to which model, by whom."""

    kind = models.CharField(max_length=12, choices=EventKind.choices, db_index=True)
    model = models.ForeignKey(
        Model, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    operation = models.ForeignKey(
        Operation, null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    message = models.TextField()
    error_code = models.CharField(max_length=40, blank=True)
    data = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.kind}: {self.message}"


def token_digest(raw: str) -> str:
    """Return the stored form of an API token."""
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token for the API; only its sha256 is stored."""

    PREFIX = "myd_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(
        max_length=12, editable=False, help_text="First characters, to tell tokens apart."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @classmethod
    def new_raw(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)
