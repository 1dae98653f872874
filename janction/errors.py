"""The application error hierarchy: a stable snake_case code and an HTTP status per error."""

from typing import Any


class ApplicationError(Exception):
    """A failure the caller can act on, rendered as {"code", "message", "detail"}."""

    code = "application_error"
    status = 400

    def __init__(self, message: str, *, detail: Any = None, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail if detail is not None else {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class ValidationFailed(ApplicationError):
    code = "invalid"
    status = 400


class NotFound(ApplicationError):
    code = "not_found"
    status = 404


class PermissionDenied(ApplicationError):
    code = "permission_denied"
    status = 403


class Conflict(ApplicationError):
    code = "conflict"
    status = 409


class Unprocessable(ApplicationError):
    code = "unprocessable"
    status = 422
