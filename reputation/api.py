"""Reputation REST API: your own scores and the evidence behind them (operators see everyone's in the admin)."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.openapi import error_responses
from reputation.acts import min_score_filter, pool_score_distributions
from reputation.models import Evidence
from reputation.selectors import reputation_overview


class EvidenceSerializer(serializers.ModelSerializer):
    positive = serializers.SerializerMethodField(help_text="Units of good evidence (micro-units / 10^6).")
    negative = serializers.SerializerMethodField(help_text="Units of bad evidence.")

    class Meta:
        model = Evidence
        fields = [
            "id",
            "day",
            "at",
            "kind",
            "subject_kind",
            "node",
            "positive",
            "negative",
            "self_dealing",
            "source",
            "detail",
            "corrects",
        ]

    def get_positive(self, obj) -> str:
        return f"{obj.positive / 1_000_000:.6f}"

    def get_negative(self, obj) -> str:
        return f"{obj.negative / 1_000_000:.6f}"


class NodeScoreSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    score = serializers.DecimalField(max_digits=7, decimal_places=6)


class OverviewSerializer(serializers.Serializer):
    provider_score = serializers.DecimalField(max_digits=7, decimal_places=6)
    buyer_score = serializers.DecimalField(max_digits=7, decimal_places=6)
    nodes = NodeScoreSerializer(many=True)
    evidence = EvidenceSerializer(many=True)


class ReputationMine(APIView):
    @extend_schema(
        responses={200: OverviewSerializer, **error_responses(401)},
        summary="Your scores (as provider, buyer, per node) and the latest 100 pieces of evidence behind them",
    )
    def get(self, request):
        return Response(OverviewSerializer(reputation_overview(user=request.user)).data)


class NodeScoreItemSerializer(serializers.Serializer):
    node = serializers.IntegerField()
    score = serializers.DecimalField(max_digits=7, decimal_places=6)


class PoolScoresSerializer(serializers.Serializer):
    pool = serializers.CharField()
    nodes = serializers.IntegerField()
    min_score_to_enter = serializers.DecimalField(max_digits=7, decimal_places=6)
    lowest = serializers.DecimalField(max_digits=7, decimal_places=6)
    quartiles = serializers.ListField(child=serializers.DecimalField(max_digits=7, decimal_places=6))
    highest = serializers.DecimalField(max_digits=7, decimal_places=6)
    node_scores = NodeScoreItemSerializer(many=True)


class PoolScores(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        responses=PoolScoresSerializer(many=True),
        summary="Each pool's score distribution and each node's score (public, like the pools' offers)",
        parameters=[
            OpenApiParameter(
                "min_score",
                str,
                description="List only the nodes scoring at least this (0 to 1); a bad value is a 400 naming it.",
            )
        ],
    )
    def get(self, request):
        min_score = min_score_filter(request.query_params.get("min_score", ""))
        return Response(PoolScoresSerializer(pool_score_distributions(min_score=min_score), many=True).data)
