"""Accounts REST API: profile, API keys, wallet linking."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from janction.openapi import error_responses
from janction.throttling import ApiKeyRateThrottle
from ledger.models import Wallet
from ledger.wallets import wallet_challenge_create, wallet_link, wallet_unlink
from marketplace.models import ApiKey, Profile, Region
from marketplace.services import api_key_create, api_key_revoke, profile_update


class ProfileSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    display_name = serializers.CharField(max_length=80, allow_blank=True)
    region = serializers.ChoiceField(choices=Region.choices)

    class Meta:
        model = Profile
        fields = ["email", "display_name", "region", "is_buyer", "is_provider"]


class ProfileDetail(APIView):
    @extend_schema(responses=ProfileSerializer, summary="Your profile")
    def get(self, request):
        profile, _ = Profile.objects.get_or_create(user=request.user)
        return Response(ProfileSerializer(profile).data)

    @extend_schema(request=ProfileSerializer, responses=ProfileSerializer, summary="Change your profile")
    def patch(self, request):
        profile, _ = Profile.objects.get_or_create(user=request.user)
        serializer = ProfileSerializer(profile, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = {**ProfileSerializer(profile).data, **serializer.validated_data}
        if not (data["is_buyer"] or data["is_provider"]):
            raise serializers.ValidationError({"is_buyer": "Keep at least one role: buyer or provider."})
        profile = profile_update(
            user=request.user,
            display_name=data["display_name"],
            region=data["region"],
            is_buyer=data["is_buyer"],
            is_provider=data["is_provider"],
        )
        return Response(ProfileSerializer(profile).data)


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "last_used_at", "revoked_at"]


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80, help_text="A label such as 'ci-runner'.")


class ApiKeyList(APIView):
    @extend_schema(responses=ApiKeySerializer(many=True), summary="Your API keys (never the secret)")
    def get(self, request):
        keys = ApiKey.objects.filter(user=request.user).order_by("-created_at")
        return Response(ApiKeySerializer(keys, many=True).data)

    @extend_schema(
        request=ApiKeyCreateSerializer,
        responses={
            201: inline_serializer("ApiKeyCreated", {"key": serializers.CharField(), "api_key": ApiKeySerializer()}),
            **error_responses(409),
        },
        summary="Create an API key; the response is the only time the key is shown",
    )
    def post(self, request):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, raw_key = api_key_create(user=request.user, name=serializer.validated_data["name"].strip())
        return Response({"key": raw_key, "api_key": ApiKeySerializer(api_key).data}, status=status.HTTP_201_CREATED)


class ApiKeyDetail(APIView):
    @extend_schema(responses={200: ApiKeySerializer}, summary="Revoke an API key; the response is the revoked key")
    def delete(self, request, key_id: int):
        return Response(ApiKeySerializer(api_key_revoke(user=request.user, key_id=key_id)).data)


class WalletSerializer(serializers.ModelSerializer):
    class Meta:
        model = Wallet
        fields = ["id", "address", "chain_id", "linked_at"]


class ChallengeRequestSerializer(serializers.Serializer):
    address = serializers.CharField(max_length=64, help_text="The wallet address you will sign with.")


class ChallengeSerializer(serializers.Serializer):
    nonce = serializers.CharField()
    message = serializers.CharField(help_text="Sign exactly this text with personal_sign (EIP-191).")
    expires_at = serializers.DateTimeField()


class LinkRequestSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=4000, trim_whitespace=False)
    signature = serializers.CharField(max_length=200)


class WalletChallenge(APIView):
    throttle_classes = [ApiKeyRateThrottle, ScopedRateThrottle]
    throttle_scope = "siwe"

    @extend_schema(request=ChallengeRequestSerializer, responses={201: ChallengeSerializer}, summary="Get a SIWE nonce")
    def post(self, request):
        serializer = ChallengeRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        challenge = wallet_challenge_create(user=request.user, address=serializer.validated_data["address"])
        return Response(ChallengeSerializer(challenge).data, status=status.HTTP_201_CREATED)


class WalletList(APIView):
    @extend_schema(responses=WalletSerializer(many=True), summary="Your linked wallets")
    def get(self, request):
        return Response(WalletSerializer(Wallet.objects.filter(user=request.user).order_by("pk"), many=True).data)

    @extend_schema(
        request=LinkRequestSerializer,
        responses={201: WalletSerializer, **error_responses(409)},
        summary="Link a wallet",
    )
    def post(self, request):
        serializer = LinkRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        wallet = wallet_link(user=request.user, **serializer.validated_data)
        return Response(WalletSerializer(wallet).data, status=status.HTTP_201_CREATED)


class WalletDetail(APIView):
    @extend_schema(responses={204: None}, summary="Unlink a wallet")
    def delete(self, request, wallet_id: int):
        wallet_unlink(user=request.user, wallet_id=wallet_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
