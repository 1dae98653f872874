"""The OpenAPI schema's error side: the error body, and every error status each operation can answer."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated


class ErrorSerializer(serializers.Serializer):
    """The body of every API error."""

    code = serializers.CharField(help_text="A stable snake_case code, e.g. invalid, not_found, throttled.")
    message = serializers.CharField(help_text="What went wrong and what to change, for people.")
    detail = serializers.JSONField(help_text="Machine-readable specifics: per-field messages, limits, ids.")


ERROR_DESCRIPTIONS = {
    400: "Invalid input (a field, a query parameter, a NUL character, a body nested too deeply); see detail.",
    401: "No credentials, or an unknown or revoked API key: send 'Authorization: Bearer <API key>'.",
    402: "Not enough available funds for the escrow this request needs.",
    403: "Not allowed (for browser sessions: a missing CSRF token).",
    404: "No such object, or it is not yours (also a page past the last one).",
    409: "Conflicts with the current state, or a request with this Idempotency-Key is still running.",
    413: "The request body is larger than the limit.",
    415: "Send the body as application/json.",
    422: "This Idempotency-Key was already used with a different request.",
    429: "Too many requests from this address or API key; retry after the Retry-After header's seconds.",
}


def error_responses(*statuses: int) -> dict:
    """Return the OpenAPI responses for the given error statuses, for @extend_schema(responses=...)."""
    return {status: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[status]) for status in statuses}


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's schema plus the error statuses every operation can answer, with the error body."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in sorted(self._error_statuses()):
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(
                    OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[status]),
                    str(status),
                    None,
                    direction,
                )
        return dict(sorted(responses.items()))

    def _error_statuses(self) -> set[int]:
        # Every request: a NUL in the query string (400), a bad API key (401), too big a body (413), rate limits.
        statuses = {400, 401, 413, 429}
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            statuses.add(403)  # browser sessions without a CSRF token
        if any(cls not in (AllowAny, IsAuthenticated) for cls in getattr(self.view, "permission_classes", ())):
            statuses.add(403)  # a role the caller may lack (operators only, ...)
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            statuses.add(415)
        if "{" in self.path or (self._is_list_view() and getattr(self.view, "pagination_class", None)):
            statuses.add(404)
        if any(p.get("name") == "Idempotency-Key" for p in self._get_parameters()):
            statuses |= {409, 415, 422}
        return statuses
