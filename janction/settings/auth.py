"""Accounts: django-allauth (e-mail log-in, mandatory verification, TOTP two-factor)."""

from urllib.parse import urlsplit

from .base import DEBUG, JANCTION_SITE_URL, VAR_DIR
from .env import env_int, env_str

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "home"

ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Janction] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = env_str("JANCTION_HTTP_PROTOCOL") or urlsplit(JANCTION_SITE_URL).scheme

MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Janction"

# Mail: printed to the console in the embedded default unless EMAIL_BACKEND says otherwise.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Janction <no-reply@janction.localhost>")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

SESSION_COOKIE_SECURE = not DEBUG and ACCOUNT_DEFAULT_HTTP_PROTOCOL == "https"
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Sign-In-With-Ethereum wallet linking: the message names the site people opened (JANCTION_SITE_URL).
SIWE_NONCE_TTL_SECONDS = env_int("SIWE_NONCE_TTL_SECONDS", 600)
SIWE_DOMAIN = env_str("SIWE_DOMAIN") or urlsplit(JANCTION_SITE_URL).netloc
SIWE_URI = env_str("SIWE_URI") or JANCTION_SITE_URL
SIWE_CHAIN_ID = env_int("SIWE_CHAIN_ID", 31337)
