"""ColdTrace settings: one module, driven by the environment.

Every variable is listed, with a comment, in ``docker/.env.example``. With no
configuration at all the platform runs embedded (SQLite, a broker-less Celery
transport); ``DATABASE_URL``, ``CELERY_BROKER_URL`` and ``MQTT_URL`` point it at
real services. Secrets may also be given as files: ``SECRET_KEY_FILE``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from traceability.rates import parse_rate

# Lets the typed generics of django-stubs (ModelAdmin[Model], ...) run.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _secret(name: str, default: str | None = None) -> str | None:
    """A secret from ``NAME`` or, for mounted secrets, from the file ``NAME_FILE``."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        return Path(path).read_text().strip()
    value: str | None = env.str(name, default=default)
    return value


DEBUG = env.bool("DEBUG", default=False)


def _development_secret_key() -> str:
    """A random key kept in var/ (mode 0600), so a development checkout needs no configuration."""
    path = VAR_DIR / "development-secret-key"
    if not path.exists():
        VAR_DIR.mkdir(exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set SECRET_KEY (or SECRET_KEY_FILE); only DEBUG=1 runs without one.")
    SECRET_KEY = _development_secret_key()

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# The Digital Link domain: QR codes and API links are absolute on it.
BASE_URL = env.str("BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "ledger",
    "traceability",
    "iot_ingest",
]

MIDDLEWARE = [
    # First, so that every log line of a request, redirects included, carries its id.
    "traceability.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "traceability.security.PermissionsPolicyMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication, so that a refusal is recorded with the user it refused.
    "traceability.security.AccessDeniedAuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if not DEBUG:
    # Production serves the static files collected into the image (docker/Dockerfile) itself;
    # with DEBUG, runserver serves them from the apps. After the header middleware, so that static
    # files carry the same security headers (CSP included) as pages.
    _after_headers = MIDDLEWARE.index("django.middleware.csp.ContentSecurityPolicyMiddleware") + 1
    MIDDLEWARE.insert(_after_headers, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "traceability.urls"
WSGI_APPLICATION = "traceability.wsgi.application"
ASGI_APPLICATION = "traceability.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite in WAL mode by default, so the web process, workers and ingest can
# read while one of them writes; PostgreSQL through DATABASE_URL.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'coldtrace.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# Failed sign-ins before an account, or a client address, is locked out for LOGIN_LOCKOUT_SECONDS.
LOGIN_FAILURES_PER_ACCOUNT = env.int("LOGIN_FAILURES_PER_ACCOUNT", default=5)
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=20)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=900)
# An API token works for this many days after it was issued, then its client signs in again (0: no expiry).
API_TOKEN_DAYS = env.int("API_TOKEN_DAYS", default=90)
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
# The consumer pages speak these, chosen by Accept-Language (LocaleMiddleware).
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "static")

CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

# Security: safe by default; DEBUG relaxes only what local HTTP needs.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# A browser keeps a __Host- cookie only if it is Secure, has Path=/ and no Domain (Django's defaults),
# so neither plain HTTP nor a sibling subdomain can set or overwrite the session or the CSRF token.
SESSION_COOKIE_NAME = "__Host-sessionid" if SESSION_COOKIE_SECURE else "sessionid"
CSRF_COOKIE_NAME = "__Host-csrftoken" if CSRF_COOKIE_SECURE else "csrftoken"
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# Preloading binds the whole registrable domain and every subdomain of it for months, and
# hstspreload.org takes only a registrable domain that serves the header itself: a decision for
# the domain's owner, not for a platform usually served from a subdomain (id.example-pharma.com).
# Off unless set; while off, Django's reminder (security.W021) is silenced.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Browser features no page uses: refused to our pages and to anything they could embed
# (traceability/security.py sends the header; Django has no setting for it).
PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in (
        "accelerometer",
        "autoplay",
        "browsing-topics",
        "camera",
        "display-capture",
        "encrypted-media",
        "geolocation",
        "gyroscope",
        "hid",
        "idle-detection",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
}
# /health/ is probed, and /metrics scraped, over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics$"]

SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "traceability.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["traceability.api.permissions.IsMember"],
    "DEFAULT_PARSER_CLASSES": ["traceability.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "traceability.api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "traceability.api.errors.exception_handler",
    # Generous per-minute rates that stop a flood, not a busy client (traceability/security.py):
    # anonymous callers per address, signed-in callers per user, device ingest per address on its own
    # rate, token requests per address.
    "DEFAULT_THROTTLE_CLASSES": ["traceability.security.AnonThrottle", "traceability.security.UserThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_ANON_THROTTLE_RATE", default="600/min"),
        "user": env.str("API_USER_THROTTLE_RATE", default="3000/min"),
        "ingest": env.str("INGEST_THROTTLE_RATE", default="6000/min"),
        "auth": env.str("AUTH_THROTTLE_RATE", default="10/min"),
        "password": env.str("AUTH_THROTTLE_RATE", default="10/min"),  # a password re-entered, per user
    },
    # The client address is the last one the proxies added to X-Forwarded-For; without a proxy, the
    # header is ignored (a caller could otherwise choose a fresh address for every request).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=1 if BEHIND_TLS_PROXY else 0),
}
# The Digital Link (consumer page, linkset, DSCSA verification), per client (consumer/throttle.py):
# every look-up, and apart the answers that a code is no genuine one, which a serial harvester collects.
DIGITAL_LINK_THROTTLE_RATES = {
    "lookup": env.str("DIGITAL_LINK_THROTTLE_RATE", default="300/min"),
    "miss": env.str("DIGITAL_LINK_MISS_THROTTLE_RATE", default="30/hour"),
}
for _rate in [*REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"].values(), *DIGITAL_LINK_THROTTLE_RATES.values()]:  # type: ignore[attr-defined]
    parse_rate(_rate)  # a bad one stops the start, saying how to write it
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")  # type: ignore[attr-defined]

SPECTACULAR_SETTINGS = {
    "TITLE": "ColdTrace API",
    "DESCRIPTION": "Pharmaceutical cold-chain traceability: products, batches, shipments, custody.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "OrganisationKindEnum": "traceability.models.OrganisationKind",
        "CustodyKindEnum": "traceability.models.CustodyKind",
        "BatchStatusEnum": "traceability.models.BatchStatus",
        "SerialStatusEnum": "traceability.models.SerialStatus",
        "ShipmentStatusEnum": "traceability.models.ShipmentStatus",
    },
}

# Celery: JSON only, at-least-once delivery. With no broker configured, a
# file-system transport under var/ needs no server (embedded mode).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (_queue_dir / _folder).mkdir(parents=True, exist_ok=True)
else:
    # A hung broker must not hang ingest (it enqueues before acknowledging): time out, and
    # the sweeper re-queues what could not be queued.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_timeout": 10, "socket_connect_timeout": 5}
# Workers consume this queue; separate deployments (or test runs) on one broker use their own.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="celery")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 60
CELERY_TASK_TIME_LIMIT = 90
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
# Celery's Django fix-up closes every database connection before and after each task unless this is set:
# a new PostgreSQL session (a forked backend, its caches cold) for every task. Set, it closes them only every
# this many tasks; in between, traceability.celery closes them by Django's own rules (CONN_MAX_AGE, errors).
CELERY_DB_REUSE_MAX = 100_000

# The ledger (spec/ledger.md): its origin names the log and its key.
LEDGER_ORIGIN = env.str("LEDGER_ORIGIN", default="ledger.coldtrace.local")
LEDGER_KEY_FILE = env.path("LEDGER_KEY_FILE", default=VAR_DIR / "ledger.key")
# Who may read which entry: organisations are the parties entries name.
LEDGER_READER_PARTIES = "traceability.selectors.ledger_reader_parties"
# Where the ledger's commands record key rotations and exports (the audit log, traceability/audit.py).
LEDGER_AUDIT = "traceability.audit.record"
# Development creates the key on first use (mode 0600); production must mount one.
LEDGER_CREATE_KEY = env.bool("LEDGER_CREATE_KEY", default=DEBUG)
CELERY_BEAT_SCHEDULE = {
    "ledger-sequence": {"task": "ledger.tasks.sequence", "schedule": 1.0},
    "ledger-checkpoint": {"task": "ledger.tasks.checkpoint", "schedule": 5.0},
    "inbox-sweep": {"task": "iot_ingest.tasks.sweep_inbox", "schedule": 15.0},
    "evaluate-moving": {"task": "iot_ingest.tasks.evaluate_moving", "schedule": 60.0},
    "readings-commit": {"task": "iot_ingest.tasks.commit_readings", "schedule": 180.0},
    # Months ahead for readings partitioned by month (PostgreSQL, after readings_partition; else nothing to do).
    "readings-partitions": {"task": "iot_ingest.tasks.readings_partitions_ahead", "schedule": 86400.0},
}

MQTT_URL = env.str("MQTT_URL", default="mqtt://127.0.0.1:1883")

# A processing task takes on up to this many of the oldest pending inbox messages besides its own, so a queue
# of small tasks becomes a few large transactions (0: each task processes only its own messages).
INBOX_ADOPTED = env.int("INBOX_ADOPTED", default=500)

# Rendered consumer pages each web process keeps, least recently used dropped first (about 8 kB each);
# 0 keeps none, and every scan renders its page.
CONSUMER_PAGES_KEPT = env.int("CONSUMER_PAGES_KEPT", default=2048)

# /metrics answers only "Authorization: Bearer <METRICS_KEY>"; with no key it does not exist (404).
METRICS_KEY = _secret("METRICS_KEY", default="") or ""


# Mail (recall notices): EMAIL_URL as django-environ reads it, e.g. smtp+tls://user:password@host:587
# (STARTTLS), smtp+ssl://...:465, consolemail://; the console with DEBUG, else SMTP on localhost.
# Django 6.1's MAILERS, which replaces the deprecated EMAIL_* settings.
def _mailer(url: str) -> dict[str, object]:
    config = environ.Env.email_url_config(url)
    backend = config["EMAIL_BACKEND"]
    options: dict[str, object] = {}
    if backend == "django.core.mail.backends.smtp.EmailBackend":
        options = {
            "host": config["EMAIL_HOST"] or "localhost",
            "port": config["EMAIL_PORT"] or 25,
            "username": config["EMAIL_HOST_USER"] or "",
            "password": config["EMAIL_HOST_PASSWORD"] or "",
            "use_tls": bool(config.get("EMAIL_USE_TLS")),
            "use_ssl": bool(config.get("EMAIL_USE_SSL")),
            "timeout": 30,
        }
    elif config["EMAIL_FILE_PATH"]:
        options = {"file_path": config["EMAIL_FILE_PATH"]}
    return {"BACKEND": backend, "OPTIONS": options}


MAILERS = {"default": _mailer(_secret("EMAIL_URL") or ("consolemail://" if DEBUG else "smtp://localhost:25"))}
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="ColdTrace <coldtrace@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Logs go to standard error (containers collect it as they do stdout): one JSON object a line in
# production, text for developers. Every line of a request or a Celery task carries its id
# (traceability/logs.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "traceability.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "traceability.logs.JsonFormatter"},
        "text": {"()": "traceability.logs.TextFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# Celery keeps this configuration instead of installing its own handlers and format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
