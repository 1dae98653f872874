"""DRF authentication with `Authorization: Bearer <API key>`."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from marketplace.services import api_key_authenticate


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        if scheme != self.keyword:
            return None
        raw_key = raw_key.strip()
        if not raw_key or " " in raw_key:
            raise exceptions.AuthenticationFailed("Send exactly one API key: 'Authorization: Bearer <key>'.")
        api_key = api_key_authenticate(raw_key=raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("This API key is unknown or revoked; create a new one.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("This account is disabled.")
        if api_key.service_rental_id is not None:
            raise exceptions.PermissionDenied(
                f"This API key is scoped to the service of rental {api_key.service_rental_id}: it opens only "
                "that service's /svc/ endpoint. Use an unscoped key for the account API."
            )
        return api_key.user, api_key

    def authenticate_header(self, request):
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Document API keys in the OpenAPI schema as an HTTP Bearer scheme."""

    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "jct_...",
            "description": "An API key from the API keys page: `Authorization: Bearer jct_...`.",
        }
