"""REST API: DRF, filters, OpenAPI schema with self-hosted docs, and the bounds on every request."""

from .env import env_bool, env_int, env_str

# Every request body, on every endpoint, is refused with 413 past this size (janction/guards.py)...
JANCTION_MAX_BODY_BYTES = env_int("JANCTION_MAX_BODY_BYTES", 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = JANCTION_MAX_BODY_BYTES
# ...and with 400 when it nests arrays/objects deeper than this, before any parser sees it.
JANCTION_MAX_JSON_DEPTH = env_int("JANCTION_MAX_JSON_DEPTH", 32)

# Rate limits (janction/throttling.py), kept in the cache so that every worker process shares them:
# API requests per client address (checked before authentication) and per API key or signed-in user.
JANCTION_RATE_LIMIT_IP = env_str("JANCTION_RATE_LIMIT_IP", "1200/min")
JANCTION_RATE_LIMIT_KEY = env_str("JANCTION_RATE_LIMIT_KEY", "600/min")
# Reverse proxies in front of the app that append to X-Forwarded-For (0: use the socket's address).
JANCTION_TRUSTED_PROXIES = env_int("JANCTION_TRUSTED_PROXIES", 0)

# Content-Security-Policy of HTML pages (janction/security.py); the API docs pages get the second one.
JANCTION_CSP = env_str("JANCTION_CSP") or (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
JANCTION_CSP_DOCS = env_str("JANCTION_CSP_DOCS") or (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# Tests only: exit the process right after an Idempotency-Key request commits, before it answers.
JANCTION_TEST_EXIT_AFTER_IDEMPOTENT_COMMIT = env_bool("JANCTION_TEST_EXIT_AFTER_IDEMPOTENT_COMMIT", False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "marketplace.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "janction.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "janction.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "janction.api.exception_handler",
    # JSON bodies only (415 otherwise), through the parser that also refuses NUL characters.
    "DEFAULT_PARSER_CLASSES": ["janction.guards.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # JSON only: Swagger UI at /api/docs/ replaces the browsable API, whose inline script the CSP refuses.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": ["janction.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"siwe": "30/min"},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Janction API",
    "DESCRIPTION": (
        "Rent vGPUs from independent providers. Authenticate with `Authorization: Bearer <API key>` "
        "(keys start with `jct_`; create them on the API keys page).\n\n"
        "Amounts are decimal strings in whole currency units, plain ASCII digits with an optional fraction "
        '(`"12"`, `"0.45"`); JSON numbers, signs, exponents and spaces are refused. They are also returned as '
        "integer base units (USDC has 6 decimals, JCT 18).\n\n"
        'Every error is `{"code", "message", "detail"}` with a 4xx status. Requests are rate limited per '
        "address and per API key (429 with Retry-After); bodies are limited in size (413) and nesting depth (400)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One enum per choice set, named after it (the default names collide for every `state` field).
    "ENUM_NAME_OVERRIDES": {
        "RentalStateEnum": "marketplace.models.RentalState",
        "NodeStateEnum": "nodes.models.NodeState",
        "VGpuStateEnum": "nodes.models.VGpuState",
    },
}
