"""Core Django settings: apps, middleware, templates, static files."""

import warnings
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Where the embedded default keeps its files (SQLite database, sent mail, CA key).
VAR_DIR = Path(env_str("JANCTION_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG and env_str("DATABASE_URL"):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set in real mode (DATABASE_URL is set).")
    # Embedded default and tests only: an obviously-insecure development key.
    SECRET_KEY = "janction-embedded-insecure-development-key-do-not-use-in-production"  # noqa: S105

# The address people open: links in mail, the SIWE domain and URI, the allowed host. `make run` sets it from
# HOST and PORT; without it, http://127.0.0.1:$PORT (8000 when PORT is unset).
JANCTION_SITE_URL = (env_str("JANCTION_SITE_URL") or f"http://127.0.0.1:{env_str('PORT') or '8000'}").rstrip("/")
_site = urlsplit(JANCTION_SITE_URL)
if _site.scheme not in ("http", "https") or not _site.hostname or _site.path or _site.query:
    raise ImproperlyConfigured(
        f"JANCTION_SITE_URL={JANCTION_SITE_URL!r} must be scheme://host[:port] with no path, "
        "e.g. http://127.0.0.1:8000 or https://janction.example"
    )
JANCTION_SITE_ORIGIN = f"{_site.scheme}://{_site.netloc}"
_site_host = f"[{_site.hostname}]" if ":" in _site.hostname else _site.hostname  # Django keeps IPv6 brackets

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", list(dict.fromkeys(["127.0.0.1", "localhost", "testserver", _site_host]))
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [JANCTION_SITE_ORIGIN])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "marketplace",
    "ledger",
    "nodes",
    "pricing",
    "reputation",
    "contributions",
    # The project itself, last: its only app part is the `run_embedded` command (docs/architecture.md).
    "janction",
]

MIDDLEWARE = [
    # First: counts and times every response, the refused ones included (docs/metrics.md).
    "janction.metrics.RequestMetricsMiddleware",
    "janction.throttling.IpRateLimitMiddleware",
    "janction.guards.RequestLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files in every mode, as in production: hashed names from `collectstatic`, compressed, cached forever.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "janction.security.ContentSecurityPolicyMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "janction.urls"
ASGI_APPLICATION = "janction.asgi.application"
WSGI_APPLICATION = None

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
                "marketplace.context_processors.janction",
                "marketplace.context_processors.notifications",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# WhiteNoise serves static files in both modes. After `collectstatic` (which `make run` runs on every start, and
# a deployment runs once per release) JANCTION_STATIC_COLLECTED=1 serves STATIC_ROOT's hashed, compressed copies
# with far-future caching; without it (tests, a bare `manage.py`) WhiteNoise serves the source folders as they are.
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT") or str(VAR_DIR / "static"))
JANCTION_STATIC_COLLECTED = env_bool("JANCTION_STATIC_COLLECTED", default=False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "janction.static_storage.GzipManifestStaticFilesStorage"
        if JANCTION_STATIC_COLLECTED
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not JANCTION_STATIC_COLLECTED
if not JANCTION_STATIC_COLLECTED:
    # WhiteNoise also looks in STATIC_ROOT and warns when nothing was ever collected there; that is expected here.
    warnings.filterwarnings("ignore", message="No directory at")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("JANCTION_LOG_LEVEL", "INFO")},
    # One line per periodic task run is noise; failures still log at ERROR.
    "loggers": {"celery.app.trace": {"level": "WARNING"}},
}
