"""Disputes API: a buyer opens and reads the dispute of its own rental; a provider sees its held earnings."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.openapi import error_responses
from ledger.currencies import from_base_units
from marketplace.models import Dispute
from marketplace.rentals.disputes import dispute_open, held_earnings
from marketplace.rentals.errors import RentalNotFound


class DisputeSerializer(serializers.ModelSerializer):
    refund = serializers.SerializerMethodField(help_text="USDC refunded.")

    class Meta:
        model = Dispute
        fields = ["id", "rental", "reason", "state", "refund", "note", "created_at", "resolved_at"]

    def get_refund(self, obj) -> str:
        return from_base_units(obj.refund, "USDC")


class DisputeOpenSerializer(serializers.Serializer):
    reason = serializers.JSONField(help_text="What went wrong (up to 2,000 characters).")


class RentalDispute(APIView):
    @extend_schema(responses={200: DisputeSerializer, **error_responses(401, 404)}, summary="Your rental's dispute")
    def get(self, request, rental_id: int):
        dispute = Dispute.objects.filter(rental_id=rental_id, buyer=request.user).first()
        if dispute is None:
            raise RentalNotFound(f"You have no dispute of rental {rental_id}.")
        return Response(DisputeSerializer(dispute).data)

    @extend_schema(
        request=DisputeOpenSerializer,
        responses={201: DisputeSerializer, **error_responses(400, 401, 404, 409)},
        summary="Dispute your completed, failed or interrupted rental within the window (72 h by default)",
    )
    def post(self, request, rental_id: int):
        body = request.data if isinstance(request.data, dict) else {}
        dispute = dispute_open(owner=request.user, rental_id=rental_id, reason=body.get("reason"))
        return Response(DisputeSerializer(dispute).data, status=status.HTTP_201_CREATED)


class HeldEarningSerializer(serializers.Serializer):
    rental = serializers.IntegerField()
    amount = serializers.SerializerMethodField(help_text="USDC held out of settlement.")
    why = serializers.CharField()
    until = serializers.DateTimeField(allow_null=True)

    def get_amount(self, obj) -> str:
        return from_base_units(obj["amount"], "USDC")


class HeldEarnings(APIView):
    @extend_schema(
        responses={200: HeldEarningSerializer(many=True), **error_responses(401)},
        summary="Your earnings held out of settlement batches (rentals that may still be disputed), and why",
    )
    def get(self, request):
        return Response(HeldEarningSerializer(held_earnings(provider=request.user), many=True).data)
