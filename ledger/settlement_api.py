"""Settlement REST API: batches and their DA data are public; proofs, claims, deposits and stake are the caller's."""

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.openapi import error_responses
from ledger.models import ChainDeposit, SettlementAlert, SettlementBatch
from ledger.settlement.commitments import transaction_commitment_reveal
from ledger.settlement.selectors import (
    alert_list,
    batch_data_get,
    batch_get,
    batch_list,
    chain_info,
    claimable_for_user,
    deposits_for_user,
    proofs_for_user,
    stake_for_user,
)


class BatchSerializer(serializers.ModelSerializer):
    data_hash = serializers.SerializerMethodField(help_text="SHA-256 of the DA copy, as posted on chain (bytes32).")

    class Meta:
        model = SettlementBatch
        fields = [
            "seq",
            "root",
            "data_hash",
            "status",
            "tx_hash",
            "block_number",
            "leaf_count",
            "transaction_count",
            "first_transaction_id",
            "last_transaction_id",
            "attempts",
            "created_at",
            "posted_at",
        ]

    def get_data_hash(self, batch: SettlementBatch) -> str:
        return "0x" + batch.data_id


class DepositSerializer(serializers.ModelSerializer):
    amount = serializers.SerializerMethodField(help_text="Base units, as a string.")
    credited = serializers.SerializerMethodField()

    class Meta:
        model = ChainDeposit
        fields = [
            "chain_id",
            "tx_hash",
            "log_index",
            "block_number",
            "token",
            "currency",
            "from_address",
            "amount",
            "credited",
            "credited_at",
        ]

    def get_amount(self, deposit: ChainDeposit) -> str:
        return str(int(deposit.amount))

    def get_credited(self, deposit: ChainDeposit) -> bool:
        return deposit.ledger_transaction_id is not None


class AlertSerializer(serializers.ModelSerializer):
    batch = serializers.SerializerMethodField()

    class Meta:
        model = SettlementAlert
        fields = ["id", "kind", "batch", "message", "detail", "created_at", "resolved_at"]

    def get_batch(self, alert: SettlementAlert) -> int | None:
        return alert.batch.seq if alert.batch else None


class ChainInfo(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=OpenApiTypes.OBJECT, summary="The settlement chain, its contracts and confirmations")
    def get(self, request):
        return Response(chain_info())


class BatchList(generics.ListAPIView):
    permission_classes = [AllowAny]
    serializer_class = BatchSerializer

    def get_queryset(self):
        return batch_list()


class BatchDetail(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=BatchSerializer, summary="One settlement batch")
    def get(self, request, seq: int):
        return Response(BatchSerializer(batch_get(seq=seq)).data)


class BatchDataDetail(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        responses=OpenApiTypes.OBJECT,
        summary="A batch's DA copy: the exact bytes whose SHA-256 is the data hash",
    )
    def get(self, request, sha256: str):
        return HttpResponse(batch_data_get(sha256=sha256).content, content_type="application/json")


class TransactionCommitment(APIView):
    @extend_schema(
        responses={200: OpenApiTypes.OBJECT, **error_responses(404)},
        summary="The salt and legs of one of your ledger transactions, to check its commitment in a batch's DA copy",
    )
    def get(self, request, transaction_id: int):
        return Response(transaction_commitment_reveal(user_id=request.user.pk, transaction_id=transaction_id))


class Proof(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("address", str, description="One of your wallets (default: all of them).")],
        responses={200: OpenApiTypes.OBJECT, **error_responses(404)},
        summary="Your Merkle proofs in the latest posted batch, to call claim() with",
    )
    def get(self, request):
        return Response(proofs_for_user(user_id=request.user.pk, address=request.query_params.get("address")))


class Claimable(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, summary="What you can claim on chain and what is not published yet")
    def get(self, request):
        return Response(claimable_for_user(user_id=request.user.pk))


class DepositList(generics.ListAPIView):
    serializer_class = DepositSerializer

    def get_queryset(self):
        return deposits_for_user(user_id=self.request.user.pk)


class Stake(APIView):
    @extend_schema(
        responses=inline_serializer(
            "StakePosition",
            fields={
                "account": serializers.CharField(),
                "staked_amount": serializers.CharField(),
                "pending_unstake_amount": serializers.CharField(),
                "unlock_at": serializers.DateTimeField(allow_null=True),
            },
            many=True,
        ),
        summary="Your recorded JCT stake per wallet",
    )
    def get(self, request):
        return Response(stake_for_user(user_id=request.user.pk))


class AlertList(generics.ListAPIView):
    permission_classes = [IsAdminUser]
    serializer_class = AlertSerializer

    def get_queryset(self):
        return alert_list()
