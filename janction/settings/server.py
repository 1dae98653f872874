"""Limits the real-mode web server's request guard enforces before Django reads a request."""

from .env import env_int

# Longest request target (path plus query string) answered; longer gets 414.
WEB_MAX_REQUEST_TARGET_BYTES = env_int("WEB_MAX_REQUEST_TARGET_BYTES", 8192)
# Longest single header (name plus value), the most header bytes in all and the most headers; beyond: 431.
WEB_MAX_HEADER_BYTES = env_int("WEB_MAX_HEADER_BYTES", 8192)
WEB_MAX_HEADERS_TOTAL_BYTES = env_int("WEB_MAX_HEADERS_TOTAL_BYTES", 32768)
WEB_MAX_HEADER_COUNT = env_int("WEB_MAX_HEADER_COUNT", 100)
# Seconds a client may take to send a whole request body; slower gets 408 and the connection closed.
WEB_BODY_READ_TIMEOUT_SECONDS = env_int("WEB_BODY_READ_TIMEOUT_SECONDS", 30)
