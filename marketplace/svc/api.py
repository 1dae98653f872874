"""Service REST API: a rental's endpoint (URLs, public flag, counters), its access tokens and scoped keys."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.openapi import error_responses
from marketplace.api import ApiKeySerializer
from marketplace.svc.selectors import service_stats, service_tokens, service_urls
from marketplace.svc.services import (
    service_key_create,
    service_of,
    service_public_set,
    service_token_create,
    service_token_revoke,
)


class ServiceTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class PortStatsSerializer(serializers.Serializer):
    port_name = serializers.CharField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField(help_text="Answers with a 5xx status.")
    bytes_in = serializers.IntegerField()
    bytes_out = serializers.IntegerField()
    latency_ms_mean = serializers.FloatField(allow_null=True, help_text="Mean time to the response head.")
    latency_ms_max = serializers.IntegerField(allow_null=True)
    overlay_requests = serializers.IntegerField(
        help_text="Requests carried over the overlay through the hub; the others went through the agent's tunnel."
    )


class ServiceSerializer(serializers.Serializer):
    rental = serializers.IntegerField()
    slug = serializers.CharField()
    public = serializers.BooleanField()
    expose = serializers.ListField(child=serializers.DictField())
    urls = serializers.DictField(child=serializers.CharField())
    stats = PortStatsSerializer(many=True)
    tokens = ServiceTokenSerializer(many=True)


def _service_data(rental) -> dict:
    return ServiceSerializer(
        {
            "rental": rental.pk,
            "slug": rental.service_slug,
            "public": rental.service_public,
            "expose": rental.expose,
            "urls": service_urls(rental),
            "stats": service_stats(rental),
            "tokens": list(service_tokens(rental)),
        }
    ).data


class NameSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80, help_text="A label such as 'frontend'.")


class PublicSerializer(serializers.Serializer):
    public = serializers.BooleanField(help_text="true: anyone may call the service without a key or token.")


class ServiceDetail(APIView):
    @extend_schema(responses={200: ServiceSerializer, **error_responses(404)}, summary="A rental's service endpoint")
    def get(self, request, rental_id: int):
        return Response(_service_data(service_of(owner=request.user, rental_id=rental_id)))

    @extend_schema(
        request=PublicSerializer,
        responses={200: ServiceSerializer, **error_responses(404)},
        summary="Make a service public (no key needed) or private again",
    )
    def patch(self, request, rental_id: int):
        serializer = PublicSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rental = service_public_set(owner=request.user, rental_id=rental_id, public=serializer.validated_data["public"])
        return Response(_service_data(rental))


class ServiceTokenList(APIView):
    @extend_schema(
        request=NameSerializer,
        responses={
            201: inline_serializer(
                "ServiceTokenCreated", {"token": serializers.CharField(), "service_token": ServiceTokenSerializer()}
            ),
            **error_responses(404, 409),
        },
        summary="Create an access token for the service; the response is the only time it is shown",
    )
    def post(self, request, rental_id: int):
        serializer = NameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw = service_token_create(
            owner=request.user, rental_id=rental_id, name=serializer.validated_data["name"].strip()
        )
        return Response(
            {"token": raw, "service_token": ServiceTokenSerializer(token).data}, status=status.HTTP_201_CREATED
        )


class ServiceTokenDetail(APIView):
    @extend_schema(
        request=None,
        responses={200: ServiceTokenSerializer, **error_responses(404)},
        summary="Revoke a service access token",
    )
    def delete(self, request, rental_id: int, token_id: int):
        token = service_token_revoke(owner=request.user, rental_id=rental_id, token_id=token_id)
        return Response(ServiceTokenSerializer(token).data)


class ServiceKeyList(APIView):
    @extend_schema(
        request=NameSerializer,
        responses={
            201: inline_serializer(
                "ServiceKeyCreated", {"key": serializers.CharField(), "api_key": ApiKeySerializer()}
            ),
            **error_responses(404, 409),
        },
        summary="Create an API key scoped to this service (it cannot call the account API)",
    )
    def post(self, request, rental_id: int):
        serializer = NameSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, raw = service_key_create(
            owner=request.user, rental_id=rental_id, name=serializer.validated_data["name"].strip()
        )
        return Response({"key": raw, "api_key": ApiKeySerializer(api_key).data}, status=status.HTTP_201_CREATED)
