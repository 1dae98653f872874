"""Shared DRF pieces: the one exception handler, the pagination class and the date-time filter."""

import logging
import math
from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from django_filters.fields import IsoDateTimeField
from rest_framework import exceptions as drf_exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from janction.errors import ApplicationError

logger = logging.getLogger(__name__)

_DRF_CODES = {
    drf_exceptions.ParseError: "malformed_request",
    drf_exceptions.ValidationError: "invalid",
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "permission_denied",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "throttled",
}

_MESSAGES = {
    "malformed_request": "The request body could not be parsed; send valid JSON.",
    "invalid": "Some fields are invalid; see detail for what to change.",
    "not_authenticated": "Log in, or send 'Authorization: Bearer <API key>'.",
    "not_found": "No such object, or it is not yours.",
}


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time converted to UTC, so that any offset Python accepts is one PostgreSQL accepts."""

    def clean(self, value):
        value = super().clean(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("This date-time is out of range; use one between years 1 and 9999.") from None


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO date-time filter, read into UTC (offsets past +-15:59 made PostgreSQL fail)."""

    field_class = UtcIsoDateTimeField


def exception_handler(exc, context):
    """Render every API error as {"code", "message", "detail"}."""
    if isinstance(exc, ApplicationError):
        return Response({"code": exc.code, "message": exc.message, "detail": exc.detail}, status=exc.status)
    if isinstance(exc, OperationalError):
        # The database is away or the connection pool is exhausted (psycopg_pool.PoolTimeout): overload, not a bug.
        logger.warning("database unavailable: %s", exc)
        return Response(
            {"code": "service_unavailable", "message": "The service is overloaded; retry shortly.", "detail": {}},
            status=503,
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # a real bug: let Django log it and answer 500
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), exc.default_code)
    detail = exc.detail
    if isinstance(detail, (list, dict)):
        message = _MESSAGES.get(code) or _first_message(detail)
    else:
        message = str(detail)
        detail = {}
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))
    return Response({"code": code, "message": message, "detail": detail}, status=exc.status_code, headers=headers)


def _first_message(detail) -> str:
    while isinstance(detail, (list, dict)) and detail:
        detail = next(iter(detail.values())) if isinstance(detail, dict) else detail[0]
    return str(detail) if detail else "The request is invalid."


def page_not_found(request, exception=None):
    """Answer an unknown URL under /api/ with the JSON error body, and anything else with Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"code": "not_found", "message": "No such endpoint or object; see /api/docs/.", "detail": {}}, status=404
        )
    return defaults.page_not_found(request, exception)


def server_error(request):
    """Answer a server error under /api/ with the JSON error body, and anything else with Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"code": "server_error", "message": "Something went wrong on our side; it has been logged.", "detail": {}},
            status=500,
        )
    return defaults.server_error(request)
