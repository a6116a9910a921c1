"""Modelyard settings: every value comes from the environment (django-environ).

This is the only module that reads the environment. Defaults run on a fresh
laptop: SQLite under ./data/, no Redis, the models store under ./models/.
"""

import os
import socket
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Optional: without the file the environment alone configures (django-environ would log it).
ENV_FILE = Path(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))
if ENV_FILE.is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="modelyard-insecure-dev-key-change-me")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# HTTPS in production (docs/deploy.md); all off by default, so http://127.0.0.1 works.
# TRUST_PROXY_HEADERS: a proxy sets X-Forwarded-Proto and X-Forwarded-For (overwriting a
# client's own): Django sees HTTPS, and daphne (started by `run`) the client's address.
TRUST_PROXY_HEADERS = env.bool("TRUST_PROXY_HEADERS", default=False)
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]  # probes may come over plain HTTP
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Admin login throttle (django-axes): LOGIN_FAILURE_LIMIT wrong passwords for one username
# from one address lock that pair out (429) for LOGIN_COOLOFF seconds; a success resets the
# count. Attempts are database rows, so every web process on every host counts together.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env.int("LOGIN_COOLOFF", default=900))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # no "AXES: BEGIN" line at every process start; lockouts still log
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data")))
MODELS_DIR = Path(env.str("MODELS_DIR", default=str(BASE_DIR / "models"))).resolve()
# The store is the standard Hugging Face cache layout, so transformers,
# sentence-transformers and llama.cpp find the files with HF_HUB_CACHE=MODELS_HUB_DIR.
MODELS_HUB_DIR = MODELS_DIR / "hub"
# A read-only second location scanned by reconcile when it exists.
LEGACY_HUB_DIR = Path(
    env.str("LEGACY_HUB_DIR", default=str(Path.home() / ".cache" / "huggingface" / "hub"))
)
HF_ENDPOINT = env.str("HF_ENDPOINT", default="https://huggingface.co").rstrip("/")
HF_TOKEN = env.str("HF_TOKEN", default="") or None
# A registry key or a repo id.
DEFAULT_EMBEDDING_MODEL = env.str("DEFAULT_EMBEDDING_MODEL", default="BAAI/bge-small-en-v1.5")
REGISTRY_DIR = BASE_DIR / "registry"
MODEL_REGISTRY_FILES = env.list("MODEL_REGISTRY_FILES", default=[])
REDIS_URL = env.str("REDIS_URL", default="") or None

# The first superuser, created by `manage.py ensure_superuser` (the start command).
MODELYARD_ADMIN_USER = env.str("MODELYARD_ADMIN_USER", default="admin")
MODELYARD_ADMIN_PASSWORD = env.str("MODELYARD_ADMIN_PASSWORD", default="")
MODELYARD_ADMIN_EMAIL = env.str("MODELYARD_ADMIN_EMAIL", default="")
# Where `manage.py run` serves daphne.
HOST = env.str("HOST", default="127.0.0.1")
PORT = env.int("PORT", default=8000)
# daphne processes `manage.py run` starts on that one port: one core each at most.
WEB_PROCESSES = env.int("WEB_PROCESSES", default=min(4, os.cpu_count() or 1))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    # Serves Swagger UI from its own static files: /api/v1/docs works without internet.
    "ninja",
    "django_q",
    "channels",
    "axes",
    "models_app",
    "collections_app",
]

MIDDLEWARE = [
    # First: it gives every error under /api/ (an unknown route, a wrong method, a bad
    # Host, a crash) the API's JSON error shape, whichever layer below answered.
    "config.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",  # a locked-out login becomes a 429 page
    # daphne serves no static files; WhiteNoise does, in every setup, without a proxy.
    # Last, not second: it is sync-only, and below it every other middleware would run
    # in async mode, each hook a hop to a thread and back (12 hops a request under
    # daphne). Last, the whole stack runs in one thread; the middlewares above do
    # nothing to a static GET that costs more than those hops.
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'modelyard.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # A file, not memory, so that a worker process started by a test sees the test data.
    # One file per test process, so that parallel runs do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
    # WAL and a busy timeout let the web process and the worker share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
elif DATABASES["default"]["ENGINE"].endswith("postgresql") and env.bool(
    "MODELYARD_WEB_PROCESS", default=False
):
    # A daphne process (config/asgi.py sets the flag): a connection pool (psycopg_pool),
    # not persistent connections. Under ASGI each request runs in a thread of its own, so
    # CONN_MAX_AGE would leave an open connection behind every finished thread until
    # PostgreSQL refuses new clients. Workers keep persistent connections: django-q2 forks
    # them, and a pool (its connections, its threads) does not survive a fork.
    # Django's backend but for the pool's check: one broken connection (after a server
    # restart) makes it check every idle one at once (config/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "config.postgresql"
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=8),
        "timeout": env.float("DB_POOL_TIMEOUT", default=30.0),
    }
else:
    # Reuse server connections across tasks and commands; check them before reuse.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if REDIS_URL:
    # Pub/sub, not channels_redis.core: live updates are a broadcast to one group, and
    # pub/sub fans a message out once per process (core writes it to a list per client:
    # at 50 clients its p95 delay was 17 s, pub/sub's 0.26 s, bench/progress.py).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# A download may run for hours: the timeout must outlast it and retry must be
# longer still, so django-q2 never hands a running task to a second worker.
Q_TASK_TIMEOUT = env.int("Q_TASK_TIMEOUT", default=24 * 3600)
Q_CLUSTER = {
    "name": "modelyard",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": Q_TASK_TIMEOUT,
    "retry": Q_TASK_TIMEOUT + 3600,
    "max_attempts": 1,
    "catch_up": False,
    "label": "Tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    # The ORM broker with a doorbell (models_app/broker.py): a task queued on this host wakes
    # the pusher at once, so the poll is only the fallback (a task queued on another host).
    # Polling alone, at 0.05 s a download waited 33 ms (median) for a worker, for 3 % of a
    # core idle.
    Q_CLUSTER["broker_class"] = "models_app.broker.DoorbellORM"
    Q_CLUSTER["poll"] = env.float("Q_POLL", default=0.5)

# Downloads and operations. Sizes in bytes, times in seconds.
DOWNLOAD_DISK_RESERVE = env.int("DOWNLOAD_DISK_RESERVE", default=1024**3)
DOWNLOAD_RETRY_ATTEMPTS = env.int("DOWNLOAD_RETRY_ATTEMPTS", default=5)
DOWNLOAD_RETRY_BASE_DELAY = env.float("DOWNLOAD_RETRY_BASE_DELAY", default=1.0)
DOWNLOAD_RETRY_MAX_DELAY = env.float("DOWNLOAD_RETRY_MAX_DELAY", default=30.0)
DOWNLOAD_CONNECT_TIMEOUT = env.float("DOWNLOAD_CONNECT_TIMEOUT", default=10.0)
DOWNLOAD_READ_TIMEOUT = env.float("DOWNLOAD_READ_TIMEOUT", default=30.0)
DOWNLOAD_PARALLEL_FILES = env.int("DOWNLOAD_PARALLEL_FILES", default=4)
# 0.3 s: under the websocket's 4 messages a second, so no progress update waits there.
OPERATION_PROGRESS_INTERVAL = env.float("OPERATION_PROGRESS_INTERVAL", default=0.3)
OPERATION_HEARTBEAT_STALE = env.int("OPERATION_HEARTBEAT_STALE", default=60)
# Seconds between the heartbeats each worker process writes (/healthz, GET /api/v1/status).
PROCESS_HEARTBEAT_INTERVAL = env.float("PROCESS_HEARTBEAT_INTERVAL", default=5.0)
# Seconds `manage.py run` waits for its children to stop before it kills them.
RUN_STOP_TIMEOUT = env.float("RUN_STOP_TIMEOUT", default=10.0)
PARTIAL_MAX_AGE = env.int("PARTIAL_MAX_AGE", default=24 * 3600)
# The name this host's processes are recorded under (operations, heartbeats, runtime
# instances). Every host (every container with its own pid namespace) needs its own.
HOST_NAME = env.str("HOST_NAME", default="") or socket.gethostname()

# The runtime: runner processes serving GGUF models with llama-cpp-python (docs/runtime.md).
# `manage.py run` starts the runtime supervisor unless RUNTIME_ENABLED is false.
RUNTIME_ENABLED = env.bool("RUNTIME_ENABLED", default=True)
# Models loaded at once on a host (1 without a GPU: two would share its cores).
RUNTIME_MAX_LOADED = env.int("RUNTIME_MAX_LOADED", default=1)
# Bytes the runtime may use on a host (0: the host's RAM less RUNTIME_MEMORY_RESERVE), and
# what it always leaves to the OS and everything else (the Vibrant spec's 2 GiB).
RUNTIME_MEMORY_BUDGET = env.int("RUNTIME_MEMORY_BUDGET", default=0) or None
RUNTIME_MEMORY_RESERVE = env.int("RUNTIME_MEMORY_RESERVE", default=2 * 1024**3)
# Seconds a model stays loaded after its last request (-1: until unloaded).
RUNTIME_KEEP_ALIVE = env.int("RUNTIME_KEEP_ALIVE", default=300)
RUNTIME_DEFAULT_N_CTX = env.int("RUNTIME_DEFAULT_N_CTX", default=4096)
# CPU threads per runner; 0: the host's physical cores (what is chosen is shown).
RUNTIME_THREADS = env.int("RUNTIME_THREADS", default=0)
# Where runners listen, and the address the web processes reach them at (another host's
# web processes need this host's address: bind 0.0.0.0 and advertise it).
RUNTIME_BIND = env.str("RUNTIME_BIND", default="127.0.0.1")
RUNTIME_ADVERTISE_ADDRESS = env.str("RUNTIME_ADVERTISE_ADDRESS", default="") or RUNTIME_BIND
RUNTIME_LOAD_TIMEOUT = env.float("RUNTIME_LOAD_TIMEOUT", default=300.0)
# How often the supervisor looks for work when nothing woke it: a queued load or unload
# rings its doorbell (UDP), a dying runner closes its pipe, and it sleeps until the soonest
# keep-alive ends; this look only catches a ring that was lost. At 1 s it cost the idle
# supervisor 1.0-1.2 % of a core here (bench/runtime.py).
RUNTIME_POLL_INTERVAL = env.float("RUNTIME_POLL_INTERVAL", default=5.0)
# Keep one runner process started with its imports done, so a load pays only the load.
RUNTIME_SPARE_RUNNER = env.bool("RUNTIME_SPARE_RUNNER", default=True)
# Bytes of malloc heap the spare faults in while it waits, for its load to reuse (0: none).
# 64 MiB cut the first load of Gemma 270M from 38,700 minor faults to 19,500 (runner.py).
RUNTIME_SPARE_HEAP = env.int("RUNTIME_SPARE_HEAP", default=64 * 1024**2)

# Disk policy: a quota for the store, a floor of free disk, pruning.
MODELS_MAX_BYTES = env.int("MODELS_MAX_BYTES", default=0) or None
MIN_FREE_BYTES = env.int("MIN_FREE_BYTES", default=0)
AUTO_PRUNE = env.bool("AUTO_PRUNE", default=False)

# Models from anywhere (docs/models-from-anywhere.md). Import reads files only under
# IMPORT_ROOTS and export writes only under EXPORT_ROOTS (comma-separated absolute
# directories; empty turns the feature off).
IMPORT_ROOTS = [Path(p) for p in env.list("IMPORT_ROOTS", default=[]) if p]
EXPORT_ROOTS = [Path(p) for p in env.list("EXPORT_ROOTS", default=[]) if p]
# Seconds between scheduled update checks of installed entries (0: never; default weekly).
UPDATE_CHECK_INTERVAL = env.int("UPDATE_CHECK_INTERVAL", default=7 * 24 * 3600)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request without it
# Serve straight from the app and project static folders: no collectstatic step to forget.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "admin:login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django": {"level": "INFO", "propagate": True}},
}
