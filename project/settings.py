"""Settings, read from the environment in this one place (12-factor), with defaults that work on a laptop."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean flag such as ``DEBUG=1`` or ``DEBUG=false``."""
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def env_json(name: str, default: Any) -> Any:
    """Read a JSON value such as a price catalog, or ``default`` when unset."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be JSON, got {raw!r}") from error


def env_floats(name: str, default: str) -> tuple[float, ...]:
    """Read a comma-separated list of numbers such as ``5,10,20``."""
    raw = os.environ.get(name, default)
    try:
        return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be a comma-separated list of numbers, got {raw!r}") from error


DEBUG = env_bool("DEBUG", False)
# DEPLOYMENT=production turns on every safety a public deployment needs and refuses unsafe settings.
PRODUCTION = os.environ.get("DEPLOYMENT", "development") == "production"
_DEVELOPMENT_SECRET_KEY = "development-only-secret-key-never-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY") or (_DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off when DEPLOYMENT=production.")
    if SECRET_KEY == _DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfigured("DEPLOYMENT=production needs a random SECRET_KEY of at least 50 characters.")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [origin for origin in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if origin]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_dramatiq",
    "core",
    "credits",
    "generation",
    "generation.webhooks",
    "studio",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: WhiteNoise is synchronous only, and anywhere higher it would make every middleware below it an
    # async-to-sync hand-off of its own under ASGI.
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

# Around Django under ASGI: the event streams are served there once Django has accepted them (core/events/asgi.py).
ASGI_MIDDLEWARE = ["core.events.asgi.EventStreams"]

ROOT_URLCONF = "project.urls"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "studio"
LOGOUT_REDIRECT_URL = "login"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

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

# --- Services -----------------------------------------------------------------------------------
# Reading the settings starts nothing and connects to nothing. `make run` and `make test` run through
# `python -m project.embedded run --`, which starts embedded servers under var/ for the URLs that are unset.
DATABASE_URL = os.environ.get("DATABASE_URL") or "postgresql://localhost:5432/genservice"
REDIS_URL = os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
# Every Redis key this service writes starts with this prefix, so that tests and deployments can share a server.
REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "genservice")

DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)}
# Each process keeps a small pool of connections (psycopg 3's, built into Django). Under ASGI every request runs
# in a thread of its own, so without it every request would open a connection and a burst would exhaust the
# server's max_connections; with it a burst waits for a free connection instead. With health checks on, a
# connection is checked when taken, so that one broken by a database restart is replaced, not used.
DATABASE_POOL_SIZE = int(os.environ.get("DATABASE_POOL_SIZE", "8"))
DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 1, "max_size": DATABASE_POOL_SIZE, "timeout": 10}}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{REDIS_KEY_PREFIX}:cache",
        # A Redis that hangs must fail fast.
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}
# JSON requests are small; anything larger than this is refused before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("MAX_REQUEST_BYTES", str(256 * 1024)))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Dramatiq's own worker metrics (messages, errors, retries and durations per actor), which each worker machine
# serves at http://HOST:9191/ (env dramatiq_prom_host, dramatiq_prom_port). Set DRAMATIQ_PROMETHEUS=1 in the
# workers' environment only: a web process never sets the middleware's metrics up and would log an error for
# every message it sends.
DRAMATIQ_PROMETHEUS = env_bool("DRAMATIQ_PROMETHEUS", False)
if DRAMATIQ_PROMETHEUS:
    # The worker processes and the process serving their metrics share them through files in this folder.
    os.environ.setdefault("dramatiq_prom_db", str(BASE_DIR / "var" / "dramatiq-prometheus"))
DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker",
    "OPTIONS": {"url": REDIS_URL, "namespace": f"{REDIS_KEY_PREFIX}:dramatiq"},
    "MIDDLEWARE": [
        *(["dramatiq.middleware.prometheus.Prometheus"] if DRAMATIQ_PROMETHEUS else []),
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.ShutdownNotifications",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.CurrentMessage",
        "generation.images.retries.BackoffRetries",
        "generation.recovery.housekeeping.Housekeeping",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["actors", "images.actors", "videos.actors"]
# An idle Redis consumer polls its queue at most this many milliseconds apart (Dramatiq's default is 1000),
# which bounds how long a new job or a due retry waits for an idle worker. rundramatiq passes the
# environment on to the worker processes it starts.
os.environ.setdefault("dramatiq_worker_timeout", "100")

# --- Generation ---------------------------------------------------------------------------------
IMAGE_PROVIDER = os.environ.get("IMAGE_PROVIDER", "local")
AI_GATEWAY_URL = os.environ.get("AI_GATEWAY_URL", "https://ai.gateway.lovable.dev/v1")
AI_GATEWAY_API_KEY = os.environ.get("AI_GATEWAY_API_KEY", "")
AI_GATEWAY_IMAGE_MODEL = os.environ.get("AI_GATEWAY_IMAGE_MODEL", "google/gemini-2.5-flash-image-preview")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_IMAGE_MODEL = os.environ.get("OPENAI_IMAGE_MODEL", "gpt-image-1")
# User-supplied URLs (video frames) are fetched only from public addresses; tests and local demos that serve
# frames from this machine may allow private ones.
FETCH_ALLOW_PRIVATE_ADDRESSES = env_bool("FETCH_ALLOW_PRIVATE_ADDRESSES", False)
if PRODUCTION and FETCH_ALLOW_PRIVATE_ADDRESSES:
    raise ImproperlyConfigured("FETCH_ALLOW_PRIVATE_ADDRESSES must be off when DEPLOYMENT=production.")
# Seconds an image provider call may take before it counts as a transient failure.
PROVIDER_TIMEOUT = float(os.environ.get("PROVIDER_TIMEOUT", "120"))
# The local provider's knobs, for demos of latency, retries and failures without any key.
LOCAL_PROVIDER_LATENCY = float(os.environ.get("LOCAL_PROVIDER_LATENCY", "1.0"))
LOCAL_PROVIDER_FAILURE_RATE = float(os.environ.get("LOCAL_PROVIDER_FAILURE_RATE", "0"))

VIDEO_PROVIDER = os.environ.get("VIDEO_PROVIDER", "local")
GEMINI_API_BASE = os.environ.get("GEMINI_API_BASE", "https://generativelanguage.googleapis.com/v1beta")
GEMINI_API_KEY = os.environ.get("GEMINI_API_KEY", "")
VEO_MODEL = os.environ.get("VEO_MODEL", "veo-3.0-generate-001")
# The local video provider: how long a generation "runs" and which outcome it simulates
# (ok, error, filtered or a share of failures such as 0.2).
LOCAL_VIDEO_SECONDS = float(os.environ.get("LOCAL_VIDEO_SECONDS", "8"))
LOCAL_VIDEO_FAILURE_RATE = float(os.environ.get("LOCAL_VIDEO_FAILURE_RATE", "0"))

IMAGE_RETRY_DELAYS = env_floats("IMAGE_RETRY_DELAYS", "5,10,20")
VIDEO_MAX_CONCURRENT = int(os.environ.get("VIDEO_MAX_CONCURRENT", "2"))
# A generation is polled first VIDEO_FIRST_POLL seconds after its start (near Veo's shortest generation, 11 s),
# then every VIDEO_POLL_INTERVAL seconds, so that its slot goes to the next video soon after it ends.
VIDEO_FIRST_POLL = float(os.environ.get("VIDEO_FIRST_POLL", "10"))
VIDEO_POLL_INTERVAL = float(os.environ.get("VIDEO_POLL_INTERVAL", "1"))
# A start call whose outcome is unknown (timeout, reset, 5xx: the provider may have created the operation) keeps
# a slot this long, Veo's longest generation, before the slot counts as free again; the start is retried meanwhile.
VIDEO_AMBIGUOUS_START_HOLD = float(os.environ.get("VIDEO_AMBIGUOUS_START_HOLD", "360"))
# A job that ended while its operation ran (canceled, failed, timed out) keeps the slot until the provider says
# the operation ended, or until VIDEO_TIMEOUT + VIDEO_STOP_GRACE seconds after its start at the latest.
VIDEO_STOP_GRACE = float(os.environ.get("VIDEO_STOP_GRACE", "120"))
VIDEO_TIMEOUT = float(os.environ.get("VIDEO_TIMEOUT", "900"))
# A video slot is a lease renewed while its generation runs; a dead worker's slot comes back after this long.
VIDEO_SLOT_LEASE = float(os.environ.get("VIDEO_SLOT_LEASE", "30"))
# Every worker process looks for videos to start or to recover this often, besides the event-driven wake-ups.
VIDEO_DISPATCH_TICK = float(os.environ.get("VIDEO_DISPATCH_TICK", "2"))
# Every RECONCILE_INTERVAL seconds one worker process re-sends queued jobs untouched for RECONCILE_AFTER seconds
# (their message was lost, for instance with a Redis restart) and recovers jobs whose worker died.
RECONCILE_INTERVAL = float(os.environ.get("RECONCILE_INTERVAL", "30"))
RECONCILE_AFTER = float(os.environ.get("RECONCILE_AFTER", "120"))
# Queued videos one user may have waiting at once, so that one user cannot fill the queue for everyone.
VIDEO_MAX_QUEUED_PER_USER = int(os.environ.get("VIDEO_MAX_QUEUED_PER_USER", "5"))
# --- Webhooks (Standard Webhooks) ---------------------------------------------------------------------
# Seconds before retry 1, 2, 3, ... of a delivery whose attempt failed (a non-2xx answer, a timeout, a broken
# connection); once they are used up the delivery is failed.
WEBHOOK_RETRY_DELAYS = env_floats("WEBHOOK_RETRY_DELAYS", "5,300,1800,7200,18000,36000")
# One total deadline per attempt, in seconds: connecting, sending the body and the answer's status line and headers.
WEBHOOK_TIMEOUT = float(os.environ.get("WEBHOOK_TIMEOUT", "10"))
# Seconds a rotated-out signing secret keeps signing deliveries beside the new one.
WEBHOOK_SECRET_OVERLAP = float(os.environ.get("WEBHOOK_SECRET_OVERLAP", "86400"))
# --- Prices: the catalog -----------------------------------------------------------------------------
# Credits per image for each image model the provider offers (the first is the default), and credits per second
# of video for each video model and resolution. Veo bills per second and its Fast model costs a third of
# Standard; VEO_MODEL is the default video model. IMAGE_PRICES and VIDEO_PRICES (JSON, same shapes) replace the
# defaults; 0 makes a model free.
CREDITS_PER_IMAGE = int(os.environ.get("CREDITS_PER_IMAGE", "1"))
# Unset, the provider's configured model is the only one, at CREDITS_PER_IMAGE.
IMAGE_PRICES: dict[str, int] | None = env_json("IMAGE_PRICES", None)
VIDEO_PRICES: dict[str, dict[str, int]] = env_json(
    "VIDEO_PRICES",
    {
        "veo-3.0-generate-001": {"720p": 3, "1080p": 6},
        "veo-3.0-fast-generate-001": {"720p": 1, "1080p": 2},
    },
)
# How long a claimed job may go without news from its worker before another worker may take it over.
JOB_LEASE_SECONDS = float(os.environ.get("JOB_LEASE_SECONDS", "300"))

# --- Storage ------------------------------------------------------------------------------------
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "var" / "media"))
MEDIA_URL = os.environ.get("MEDIA_URL", "/media/")
# Django serves the files of MEDIA_ROOT itself, through signed links that expire after MEDIA_URL_TTL seconds
# (on S3, django-storages signs links for as long). Off, file URLs are plain MEDIA_URL paths for a CDN to serve.
SERVE_MEDIA = env_bool("SERVE_MEDIA", True)
MEDIA_URL_TTL = int(os.environ.get("MEDIA_URL_TTL", "86400"))
AWS_QUERYSTRING_EXPIRE = MEDIA_URL_TTL
# Generated files older than this many days are deleted by the housekeeping, their generations marked expired.
MEDIA_RETENTION_DAYS = int(os.environ["MEDIA_RETENTION_DAYS"]) if os.environ.get("MEDIA_RETENTION_DAYS") else None
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_URL = "/static/"
# Without collectstatic in development, WhiteNoise finds the files where the apps keep them.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if os.environ.get("AWS_STORAGE_BUCKET_NAME"):
    # django-storages reads AWS_* (bucket, endpoint URL, keys) from the environment itself.
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["AWS_STORAGE_BUCKET_NAME"],
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
        },
    }

# --- API ----------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.ScopedRateThrottleFailOpen"],
    "DEFAULT_THROTTLE_RATES": {"create": os.environ.get("THROTTLE_CREATE_RATE", "120/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Generation service API",
    "DESCRIPTION": "Asynchronous image and video generation: charge, queue, answer at once; follow the job.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Jobs and ledger entries both have a "kind": each choice set gets a name of its own.
    "ENUM_NAME_OVERRIDES": {
        "JobKindEnum": "generation.models.Job.Kind",
        "LedgerEntryKindEnum": "credits.models.CreditLedgerEntry.Kind",
    },
}

# --- Operations ---------------------------------------------------------------------------------
# Prometheus scrapes /metrics with "Authorization: Bearer METRICS_TOKEN"; without it only staff sessions may read it.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# --- Internationalisation -----------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("pt-br", _("Brazilian Portuguese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = "UTC"
USE_TZ = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "pgserver": {"level": "WARNING"}},
}
