"""Settings, read from environment variables only (12-factor).

With no ``DATABASE_URL`` / ``REDIS_URL`` the project runs on an embedded default: SQLite in WAL
mode, a local-memory cache and Celery's filesystem transport, all under ``var/``. With them set it
runs on PostgreSQL and Redis (cache and Celery broker). ``.env.example`` lists every variable.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from core.errors import sentry_init
from core.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

DATABASE_URL = env.str("DATABASE_URL", default="")

# Files under var/ that hold secrets (the key, the embedded database with its password hashes)
# are readable by their owner only.
PRIVATE_FILE_MODE = 0o600


def _secret_key_generated(path: Path) -> str:
    """The key kept in ``path``, made (random, mode 0600) on first use. ``make run``
    (scripts/run) and ``python manage.py ...`` on the embedded default use the same file."""
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "w") as draft_file:
            draft_file.write(secrets.token_urlsafe(50) + "\n")
        try:
            # A hard link never replaces an existing file: of two processes starting at once,
            # one key wins and both read it.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text(encoding="utf-8").strip()


SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DATABASE_URL:
        # The embedded default (a single machine's var/): the key generated for this checkout.
        SECRET_KEY = _secret_key_generated(VAR_DIR / "secret_key")
    elif DEBUG:
        SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DATABASE_URL is set and DEBUG is off."
        )

# --- HTTPS (on behind a TLS-terminating proxy: docker-compose.yml; off for `make run`) ------------

# HTTPS=1 turns on every setting below at once (each can still be set on its own).
HTTPS = env.bool("HTTPS", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
# Probes (load balancer, docker healthcheck) speak plain HTTP to the process itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=HTTPS)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=HTTPS)
# Trust the proxy's X-Forwarded-Proto: only behind a proxy that sets it (and strips the
# client's), else a client could claim HTTPS.
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    # djangorestframework-api-key: apikeys' model builds on its abstract one, which needs its app
    # installed (its own concrete model and table stay unused).
    "rest_framework_api_key",
    "core",
    "ingest",
    "rollups",
    "api",
    "dashboard",
    "apikeys",
]

MIDDLEWARE = [
    # Outermost: every answer (the 413s and 400s below too) carries a request id and is counted
    # and timed.
    "core.middleware.RequestIdMiddleware",
    "core.middleware.MetricsMiddleware",
    # Then: an oversize body is a 413 before anything reads it; a NUL in the query string
    # (which the database refuses) is a 400 before anything looks it up.
    "core.middleware.RequestBodyLimitMiddleware",
    "core.middleware.QueryStringMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "core.urls"
WSGI_APPLICATION = "core.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# --- Database -------------------------------------------------------------------------------

# WAL lets readers go on while one writer writes; IMMEDIATE takes the write lock at BEGIN, so two
# writers queue on the timeout instead of failing a lock upgrade.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
}

if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # A server that accepts connections but never answers must not hang requests (or /readyz).
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
    # Behind PgBouncer in transaction pooling mode, a server-side cursor (QuerySet.iterator())
    # would outlive the transaction its server connection was lent for (Django's docs,
    # "Transaction pooling and server-side cursors"). docs/SCALING.md.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.bool(
        "DISABLE_SERVER_SIDE_CURSORS", default=False
    )
    # A streaming replica of the same database: analytics answers not in the cache are read
    # there (core.routers); writes, no-cache reads and everything else use the primary.
    DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
    if DATABASE_REPLICA_URL:
        DATABASES["replica"] = {
            **env.db_url_config(DATABASE_REPLICA_URL),
            "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
            "CONN_HEALTH_CHECKS": True,
            "DISABLE_SERVER_SIDE_CURSORS": DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"],
            # Tests run against the primary's test database under this alias too.
            "TEST": {"MIRROR": "default"},
        }
        if not all(
            DATABASES[alias]["ENGINE"].endswith("postgresql") for alias in ("default", "replica")
        ):
            raise ImproperlyConfigured(
                "DATABASE_REPLICA_URL needs PostgreSQL, in it and in DATABASE_URL (a streaming "
                "replica of DATABASE_URL's database)."
            )
        DATABASES["replica"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
        DATABASE_ROUTERS = ["core.routers.ReplicaRouter"]
else:
    VAR_DIR.mkdir(exist_ok=True)
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}
    }


def _sqlite_file_private(name: Path) -> None:
    """Create the SQLite file ``name`` (mode 0600) before SQLite does (0644), and narrow an
    existing one. SQLite gives the ``-wal`` and ``-shm`` files the database file's mode."""
    if str(name) == ":memory:" or str(name).startswith("file:") or not name.parent.is_dir():
        return
    os.close(os.open(name, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
    for path in (name, Path(f"{name}-wal"), Path(f"{name}-shm")):
        if path.exists() and path.stat().st_mode & 0o077:
            path.chmod(PRIVATE_FILE_MODE)


if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = SQLITE_OPTIONS
    _sqlite_file_private(Path(DATABASES["default"]["NAME"]))
    # A file (not :memory:) so that worker processes started by the tests can share it (they get
    # it as DATABASE_URL=sqlite:///...); one per test run, so that concurrent runs do not collide.
    DATABASES["default"]["TEST"] = {"NAME": VAR_DIR / f"test-{os.getpid()}.sqlite3"}
    # The summaries' covering indexes (INCLUDE views) are for PostgreSQL's index-only scans;
    # SQLite builds them without the included column, which is all it needs. Its warning for
    # each (models.W040) was the first thing `make run` printed.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
DATABASE_IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
# A replica further behind than this (the primary's commit time of the last transaction it
# replayed, while it has more to replay) is skipped: reads go to the primary until it catches up.
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=30.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Celery -----------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "core.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="blogviews"),
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "filesystem://"
    # Processes that share this folder share the broker (tests point theirs elsewhere).
    CELERY_FILESYSTEM_DIR = Path(env.str("CELERY_FILESYSTEM_DIR", default=str(VAR_DIR / "celery")))
    CELERY_BROKER_FOLDER = CELERY_FILESYSTEM_DIR / "broker"
    CELERY_CONTROL_FOLDER = CELERY_FILESYSTEM_DIR / "control"
    for folder in (CELERY_BROKER_FOLDER, CELERY_CONTROL_FOLDER):
        folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_FOLDER),
        "data_folder_out": str(CELERY_BROKER_FOLDER),
        # Broadcast (worker control: ping, inspect) goes through files here.
        "control_folder": str(CELERY_CONTROL_FOLDER),
        "store_processed": False,
    }

CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Nothing reads task results: no result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Reconnect to the broker for as long as it is away (Celery's default gives up after 100 tries,
# some 45 minutes, and the worker exits).
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat saves each entry's last send at once (not every 3 minutes): `manage.py liveness beat`
# (the beat container's healthcheck) reads it.
CELERY_BEAT_SYNC_EVERY = 1
# Every task has limits: at the soft one the task gets an exception it can record, at the hard
# one the worker kills the process. These are the defaults; the tasks that need more (absorb,
# rebuild) set their own from the settings below.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=120)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=150)
# An absorb run normally lasts a fraction of ROLLUP_INTERVAL_SECONDS; one catching up a backlog
# commits every chunk it absorbs, so a run stopped at its limit keeps them and the next one goes
# on. The limit stops a run that hangs (say, on a lock) from holding the watermark row for ever.
ABSORB_SOFT_TIME_LIMIT_SECONDS = env.int("ABSORB_SOFT_TIME_LIMIT_SECONDS", default=300)
ABSORB_TIME_LIMIT_SECONDS = env.int(
    "ABSORB_TIME_LIMIT_SECONDS", default=ABSORB_SOFT_TIME_LIMIT_SECONDS + 30
)
# A rebuild of 100 M views takes many minutes. At the soft limit the job ends `failed` with the
# reason and changes nothing; the hard limit leaves it time to record that.
REBUILD_SOFT_TIME_LIMIT_SECONDS = env.int("REBUILD_SOFT_TIME_LIMIT_SECONDS", default=3600)
REBUILD_TIME_LIMIT_SECONDS = env.int(
    "REBUILD_TIME_LIMIT_SECONDS", default=REBUILD_SOFT_TIME_LIMIT_SECONDS + 120
)
# A queued rebuild job that no worker started within this many seconds is failed by the reaper,
# and its task message expires at the same moment. The default lets it wait behind one rebuild
# that runs to its hard limit, and as long again.
REBUILD_QUEUE_TIMEOUT_SECONDS = env.int(
    "REBUILD_QUEUE_TIMEOUT_SECONDS", default=2 * REBUILD_TIME_LIMIT_SECONDS
)
# A running rebuild job whose heartbeat is older than this many seconds has lost its worker (it
# died or was killed): the reaper, and the next rebuild request, fail it. A running job beats
# six times in that span whatever it is doing, so only a dead or frozen worker misses it.
REBUILD_STALE_SECONDS = env.int("REBUILD_STALE_SECONDS", default=120)
# Raw ids a rebuild aggregates per step (one progress update each).
REBUILD_CHUNK_IDS = env.int("REBUILD_CHUNK_IDS", default=1_000_000)
# Raw-view retention (rollups.retention): keep the raw views of the current month and this many
# months before it; older whole months are dropped once the summaries hold them (absorbed and
# folded into the monthly rows). Their answers still come, exact, from the summaries, but they
# can no longer be rebuilt or audited. Empty or 0 = keep every raw view (the default).
_raw_retention = env.str("RAW_RETENTION_MONTHS", default="").strip()
if _raw_retention and not (
    _raw_retention.isascii() and _raw_retention.isdigit() and int(_raw_retention) <= 2400
):
    raise ImproperlyConfigured(
        "RAW_RETENTION_MONTHS must be a whole number of months from 0 (off) to 2400; "
        f"got {_raw_retention!r}."
    )
RAW_RETENTION_MONTHS = int(_raw_retention or 0)

# --- Auth and API ---------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Every throttle (reads, sign-in) knows a client by its address: the socket's with 0, else
    # the one the outermost of this many trusted proxies saw in X-Forwarded-For. More than the
    # proxies really in front lets a client choose its address (and dodge every limit).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
    # Read endpoints throttle per user (signed in) and per address (public read).
    "DEFAULT_THROTTLE_RATES": {
        "analytics_user": env.str("ANALYTICS_THROTTLE_USER", default="6000/min"),
        "analytics_anon": env.str("ANALYTICS_THROTTLE_ANON", default="600/min"),
        # Requests with an API key, per key, reads and ingest together (apikeys).
        "api_key": env.str("API_KEY_THROTTLE", default="6000/min"),
    },
}

# The dashboard's sign-in page (dashboard/), and where a sign-in without ?next= lands.
LOGIN_URL = "dashboard-login"
LOGIN_REDIRECT_URL = "dashboard"

# Failed sign-ins (POST /api/token/, the admin's and the dashboard's login pages) allowed per
# username and per client address in each fixed window (DRF rate syntax); past either, 429 until
# the window ends, without checking the password. Successful sign-ins do not count. Empty = no
# limit.
LOGIN_THROTTLE_USERNAME = env.str("LOGIN_THROTTLE_USERNAME", default="10/hour")
LOGIN_THROTTLE_ADDRESS = env.str("LOGIN_THROTTLE_ADDRESS", default="50/hour")

# Staff always see /readyz's error details; so does a request sending this token in the
# X-Readyz-Token header (for a monitor). Anonymous callers get the statuses only.
READYZ_TOKEN = env.str("READYZ_TOKEN", default="")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=1)),
    "SIGNING_KEY": SECRET_KEY,
    # Tokens carry a hash of the password hash: changing the password revokes them wherever
    # the user is looked up (ingest, staff endpoints, refresh).
    "CHECK_REVOKE_TOKEN": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Blog-views analytics API",
    "DESCRIPTION": (
        "Ingest raw blog page views; read exact analytics served from precomputed rollups. "
        "Authenticate with `POST /api/token/` and send `Authorization: Bearer <access>`, or, "
        "from a server, with an API key created in the admin: `Authorization: Api-Key "
        "<secret>` (scoped to reads and/or ingest, see the apiKeyAuth scheme)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PeriodEnum": "api.spec.PERIODS",
        "CompareEnum": "api.spec.COMPARISONS",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.schema.strict_request_bodies",
        "core.schema.public_read_security",
        "core.schema.explicit_security",
        "core.schema.strings_without_nul",
        "core.schema.query_parameters_not_null",
    ],
}

# Largest request body accepted, in bytes: a full batch of 10,000 views with generous whitespace.
# core.middleware answers 413 past it on every URL (chunked bodies included, under gunicorn);
# Django's own check stays as a backstop for form bodies.
REQUEST_BODY_MAX_BYTES = env.int("REQUEST_BODY_MAX_BYTES", default=8 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = REQUEST_BODY_MAX_BYTES

# Read side (issue: read API) and rollups (issue: rollups) read these.
ANALYTICS_PUBLIC_READ = env.bool("ANALYTICS_PUBLIC_READ", default=False)
ANALYTICS_CACHE_SECONDS = env.int("ANALYTICS_CACHE_SECONDS", default=60)
# Longest time a realtime answer (the last 30 minutes, read from the raw views) may be served
# from the cache: however many dashboards poll it, the raw views are read at most once in it.
REALTIME_CACHE_SECONDS = env.int("REALTIME_CACHE_SECONDS", default=5)
# Longest run of one analytics read query, in milliseconds: past it the answer is a 503
# query_timeout. Far above the benchmark's reads (p95 under 50 ms at 13.8 M views; 0.4 s with
# 300 k views not absorbed). gunicorn's gthread workers do not cut a request short, so this is
# what bounds a read.
ANALYTICS_STATEMENT_TIMEOUT_MS = env.int("ANALYTICS_STATEMENT_TIMEOUT_MS", default=5000)
if ANALYTICS_STATEMENT_TIMEOUT_MS < 1:
    raise ImproperlyConfigured("ANALYTICS_STATEMENT_TIMEOUT_MS must be at least 1.")
# Largest answer the cache stores, in bytes (the biggest real ones, 1,000 rows, are ~150 kB).
ANALYTICS_CACHE_MAX_BYTES = env.int("ANALYTICS_CACHE_MAX_BYTES", default=1024 * 1024)
ROLLUP_INTERVAL_SECONDS = env.int("ROLLUP_INTERVAL_SECONDS", default=30)
# Beat's interval for the per-minute (realtime) rows' own absorb, which is cheap (about 0.1 s
# for 3,000 views): the shorter, the fewer raw views a realtime answer adds to them (its tail).
RECENT_ROLLUP_INTERVAL_SECONDS = env.int("RECENT_ROLLUP_INTERVAL_SECONDS", default=5)
if ROLLUP_INTERVAL_SECONDS < 1 or RECENT_ROLLUP_INTERVAL_SECONDS < 1:
    raise ImproperlyConfigured(
        "ROLLUP_INTERVAL_SECONDS and RECENT_ROLLUP_INTERVAL_SECONDS must be at least 1."
    )
# Ingest sends an absorb run as soon as this many views are pending (0: only beat's runs), at
# most one per ABSORB_TRIGGER_SECONDS: every exact read adds the pending views from the raw
# table, so this bounds their cost at any ingest rate (rollups.trigger; README "Freshness").
ABSORB_TRIGGER_PENDING = env.int("ABSORB_TRIGGER_PENDING", default=5_000)
ABSORB_TRIGGER_SECONDS = env.int("ABSORB_TRIGGER_SECONDS", default=1)
# The same for the per-minute (realtime) rows' own tail, which a realtime answer reads from raw
# (about 1 ms per 1,000 views): lower, as their run is cheap.
RECENT_TRIGGER_PENDING = env.int("RECENT_TRIGGER_PENDING", default=1_000)
if ABSORB_TRIGGER_PENDING < 0 or RECENT_TRIGGER_PENDING < 0 or ABSORB_TRIGGER_SECONDS < 1:
    raise ImproperlyConfigured(
        "ABSORB_TRIGGER_PENDING and RECENT_TRIGGER_PENDING must be at least 0 and "
        "ABSORB_TRIGGER_SECONDS at least 1."
    )

# How long a checked API key is remembered in the cache (apikeys.services). Saving, revoking or
# deleting a key forgets it at once in Redis; a cache per process (the embedded default) forgets
# it in the other processes within this time.
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=10)

# --- Static files, i18n, logging ------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Case-insensitive, as gunicorn and Celery take it (the Procfile passes the same variable to them).
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL; got {LOG_LEVEL!r}."
    )

# text (the default, for `make run` and a terminal) or json: one JSON object per line, with the
# request id (X-Request-ID) on every line of a request and of the tasks it started.
LOG_FORMAT = env.str("LOG_FORMAT", default="text").lower()
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json; got {LOG_FORMAT!r}.")
# One log line per request (method, path, endpoint, status, duration, request id). On by default
# with JSON logs, where it replaces gunicorn's plain-text access log (gunicorn.conf.py).
LOG_REQUESTS = env.bool("LOG_REQUESTS", default=LOG_FORMAT == "json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)

# --- Operations: metrics, error reports, drift audit ---------------------------------------------

# /metrics answers staff (session or token) and a scraper sending "Authorization: Bearer
# <METRICS_TOKEN>". Empty: staff only.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Error reports to Sentry (Django and Celery integrations); unset = off, nothing is sent.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="production")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)
if SENTRY_DSN:
    sentry_init(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    )
# The periodic drift audit (rollups.audit): how often it runs, how far back it looks, and how
# many random days it recounts beside yesterday and the first day of each month.
AUDIT_INTERVAL_SECONDS = env.int("AUDIT_INTERVAL_SECONDS", default=86400)
AUDIT_RANGE_DAYS = env.int("AUDIT_RANGE_DAYS", default=365)
AUDIT_RANDOM_DAYS = env.int("AUDIT_RANDOM_DAYS", default=7)
# 1 = the periodic audit queues a rebuild of the days it found drifting (as --repair does).
AUDIT_REPAIR = env.bool("AUDIT_REPAIR", default=False)
AUDIT_SOFT_TIME_LIMIT_SECONDS = env.int("AUDIT_SOFT_TIME_LIMIT_SECONDS", default=600)
