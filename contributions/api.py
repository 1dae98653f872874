"""Data contributions REST API: signed uploads from paired extensions, a contributor's records and devices."""

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema, inline_serializer
from rest_framework import exceptions, generics, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from contributions.models import Device, Record
from contributions.rewards import record_commitment_reveal
from contributions.selectors import device_status, devices_for_user, records_for_user
from contributions.services import contribution_batch_upload, device_revoke, record_delete
from janction.openapi import error_responses

SIGNATURE_HEADER = "X-Janction-Signature"
WALLET_HEADER = "X-Janction-Wallet"
WALLET_SIGNATURE_HEADER = "X-Janction-Wallet-Signature"


class RecordSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sha256 = serializers.CharField()
    kind = serializers.CharField()
    source = serializers.CharField()
    size = serializers.IntegerField()
    captured_at = serializers.DateTimeField()
    status = serializers.CharField(help_text="pending, accepted, rejected or deleted")
    reason = serializers.CharField()
    quotes_others = serializers.BooleanField()
    consent_terms_version = serializers.CharField()
    consent_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    accepted_at = serializers.DateTimeField(allow_null=True)
    deleted_at = serializers.DateTimeField(allow_null=True)
    da_batch_seq = serializers.IntegerField(allow_null=True)
    cosigner = serializers.CharField(help_text="The linked wallet that co-signed the upload (EIP-191), or ''")


class DeviceSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    algorithm = serializers.CharField()
    fingerprint = serializers.CharField()
    last_counter = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)


UPLOAD_RESPONSE = inline_serializer(
    "ContributionUpload",
    {
        "device_id": serializers.IntegerField(),
        "counter": serializers.IntegerField(),
        "items": serializers.ListField(child=serializers.DictField(), help_text="index, sha256, status, id"),
    },
)


class ContributionUpload(APIView):
    """A batch of records signed by a paired device's key (no session: the signature is the credential)."""

    permission_classes = [AllowAny]

    @extend_schema(
        summary="Upload a signed batch of records",
        description=(
            "The body is JSON: device_id, counter (larger than any before from this device), consent "
            "{terms_version, accepted_at} and records [{kind, source, content, captured_at, metadata, "
            f"quotes_others}}]. {SIGNATURE_HEADER} is the device's base64 signature of "
            "'janction-contribution-v1\\n' followed by the exact body bytes. Optionally, a wallet linked to the "
            f"device's account co-signs: {WALLET_HEADER} is its address and {WALLET_SIGNATURE_HEADER} its EIP-191 "
            "personal_sign signature (hex) of 'janction-contribution-cosign-v1\\n' followed by the body's SHA-256 "
            "in lower-case hex."
        ),
        request=OpenApiTypes.OBJECT,
        parameters=[
            OpenApiParameter(SIGNATURE_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=True),
            OpenApiParameter(WALLET_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
            OpenApiParameter(WALLET_SIGNATURE_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=False),
        ],
        responses={201: UPLOAD_RESPONSE, **error_responses(400, 401, 403, 409, 413, 415, 422, 429)},
    )
    def post(self, request):
        if request.content_type.split(";")[0].strip() != "application/json":
            raise exceptions.UnsupportedMediaType(request.content_type)
        result = contribution_batch_upload(
            body=request.body,
            signature=request.headers.get(SIGNATURE_HEADER),
            wallet=request.headers.get(WALLET_HEADER),
            wallet_signature=request.headers.get(WALLET_SIGNATURE_HEADER),
        )
        return Response(
            {"device_id": result.device_id, "counter": result.counter, "items": result.items},
            status=status.HTTP_201_CREATED,
        )


class RecordList(generics.ListAPIView):
    serializer_class = RecordSerializer
    queryset = Record.objects.none()  # for the schema; get_queryset gives the caller's records

    def get_queryset(self):
        return records_for_user(user=self.request.user)


class RecordDetail(APIView):
    @extend_schema(responses={204: None}, summary="Delete one of your records (its content; the hash stays)")
    def delete(self, request, record_id: int):
        record_delete(user=request.user, record_id=record_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class RecordCommitment(APIView):
    @extend_schema(
        responses=inline_serializer(
            "RecordCommitment",
            {
                "record_id": serializers.IntegerField(),
                "sha256": serializers.CharField(),
                "batch_seq": serializers.IntegerField(),
                "data_hash": serializers.CharField(),
                "salt": serializers.CharField(),
                "commitment": serializers.CharField(),
            },
        ),
        summary="The salt and commitment of your record in a settlement batch's DA copy",
    )
    def get(self, request, record_id: int):
        return Response(record_commitment_reveal(user=request.user, record_id=record_id))


class DeviceList(generics.ListAPIView):
    serializer_class = DeviceSerializer
    queryset = Device.objects.none()  # for the schema; get_queryset gives the caller's devices

    def get_queryset(self):
        return devices_for_user(user=self.request.user)


class DeviceRevoke(APIView):
    @extend_schema(request=None, responses=DeviceSerializer, summary="Revoke one of your paired devices")
    def post(self, request, device_id: int):
        return Response(DeviceSerializer(device_revoke(user=request.user, device_id=device_id)).data)


class DeviceStatus(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[OpenApiParameter("public_key", OpenApiTypes.STR, required=True)],
        responses=inline_serializer(
            "DeviceStatus",
            {
                "paired": serializers.BooleanField(),
                "revoked": serializers.BooleanField(),
                "device_id": serializers.IntegerField(allow_null=True),
            },
        ),
        summary="Whether an extension's key is paired (the extension polls this after asking you to approve it)",
    )
    def get(self, request):
        return Response(device_status(public_key=request.query_params.get("public_key", "")))
