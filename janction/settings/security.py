"""HTTPS hardening for production (what `manage.py check --deploy` asks for), driven by the environment.

With JANCTION_HTTP_PROTOCOL=https (and DEBUG off) the site redirects plain HTTP to HTTPS and sends HSTS
for a year; behind a TLS-terminating proxy set DJANGO_SECURE_PROXY_SSL_HEADER=1 so that the proxy's
X-Forwarded-Proto is believed. The embedded default (plain http on 127.0.0.1) keeps all of them off.
"""

from .base import DEBUG
from .env import env_bool, env_int, env_str

_HTTPS = env_str("JANCTION_HTTP_PROTOCOL", "http") == "https" and not DEBUG

SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", _HTTPS)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600 if _HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", _HTTPS)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", _HTTPS)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
