"""Market API: pools with supply, demand and last prices; stored rounds; price estimates. Public reads."""

import django_filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.api import IsoDateTimeFilter
from janction.openapi import error_responses
from ledger.currencies import AMOUNT_PATTERN, AmountField, from_base_units, usdc
from pricing.market_account import market_account_alert_text, market_account_summary
from pricing.models import MarketRound
from pricing.selectors import pool_markets
from pricing.services import price_estimate

# An estimate probes the engine with at most this many vGPUs (the largest rental the API accepts).
MAX_ESTIMATE_UNITS = 1_024


class PoolMarketSerializer(serializers.Serializer):
    name = serializers.CharField()
    architecture = serializers.CharField()
    memory_gib = serializers.IntegerField()
    vgpus_total = serializers.IntegerField()
    vgpus_free = serializers.IntegerField()
    vgpus_busy = serializers.IntegerField()
    demand_units = serializers.IntegerField(help_text="vGPUs asked for by bids waiting for a round.")
    last_round_id = serializers.IntegerField(allow_null=True)
    last_round_at = serializers.DateTimeField(allow_null=True)
    last_buyer_price = serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True)
    last_provider_price = serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True)
    reference_price = serializers.DecimalField(
        max_digits=20,
        decimal_places=6,
        help_text="USDC per vGPU-hour: the pool's default ask, the price of a round in which every node sells "
        "(docs/pricing.md).",
    )


class PoolList(APIView):
    permission_classes = [AllowAny]

    @extend_schema(responses=PoolMarketSerializer(many=True), summary="Pools: supply, demand, last clearing prices")
    def get(self, request):
        return Response(PoolMarketSerializer(pool_markets(), many=True).data)


class RoundSerializer(serializers.ModelSerializer):
    pool = serializers.CharField(source="pool.name")

    class Meta:
        model = MarketRound
        fields = [
            "id",
            "pool",
            "created_at",
            "digest",
            "bids_count",
            "asks_count",
            "units_traded",
            "buyer_payments_per_hour",
            "provider_payments_per_hour",
            "budget_per_hour",
            "mechanism",
            "parameters",
        ]


class RoundDetailSerializer(RoundSerializer):
    class Meta(RoundSerializer.Meta):
        fields = [*RoundSerializer.Meta.fields, "inputs", "outputs"]


class RoundFilter(django_filters.FilterSet):
    pool = django_filters.CharFilter(field_name="pool__name")
    since = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = MarketRound
        fields = ["pool", "since"]


class RoundList(generics.ListAPIView):
    permission_classes = [AllowAny]
    serializer_class = RoundSerializer
    filterset_class = RoundFilter
    queryset = MarketRound.objects.select_related("pool").order_by("-created_at", "-pk")


class RoundDetail(generics.RetrieveAPIView):
    """A stored round with the engine's exact inputs and outputs: pipe `inputs` into `python -m pricing.pvcg`."""

    permission_classes = [AllowAny]
    serializer_class = RoundDetailSerializer
    queryset = MarketRound.objects.select_related("pool")
    lookup_url_kwarg = "round_id"


class EstimateQuery(serializers.Serializer):
    pool = serializers.CharField(max_length=40)
    units = serializers.IntegerField(min_value=1, max_value=MAX_ESTIMATE_UNITS)
    max_price = AmountField(currency="USDC", allow_zero=True, help_text="USDC per vGPU-hour, e.g. 1.10")


class EstimateSerializer(serializers.Serializer):
    would_win = serializers.BooleanField()
    price_per_vgpu_hour = serializers.CharField(help_text="What you would pay per vGPU-hour (the round's price).")
    payment_per_hour = serializers.CharField(help_text="For all the vGPUs, USDC per hour.")
    free_units = serializers.IntegerField()
    waiting_units = serializers.IntegerField()


class PriceEstimate(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[
            OpenApiParameter("pool", str, required=True),
            OpenApiParameter("units", int, required=True),
            OpenApiParameter(
                "max_price",
                {"type": "string", "pattern": AMOUNT_PATTERN},
                required=True,
                description="USDC per vGPU-hour as a decimal string, e.g. 1.10",
            ),
        ],
        responses={200: EstimateSerializer, **error_responses(404)},
        summary="What a rental would pay if the round ran now (nothing is reserved)",
    )
    def get(self, request):
        query = EstimateQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        estimate = price_estimate(
            pool_name=query.validated_data["pool"],
            units=query.validated_data["units"],
            max_price_per_hour=query.validated_data["max_price"],
        )
        return Response(
            EstimateSerializer(
                {
                    "would_win": estimate.would_win,
                    "price_per_vgpu_hour": str(estimate.price_per_vgpu_hour),
                    "payment_per_hour": from_base_units(estimate.payment_per_hour, "USDC"),
                    "free_units": estimate.free_units,
                    "waiting_units": estimate.waiting_units,
                }
            ).data
        )


class MarketAccountDaySerializer(serializers.Serializer):
    day = serializers.DateField()
    income = serializers.CharField(help_text="USDC credited that day.")
    outflows = serializers.CharField(help_text="USDC debited that day.")
    balance = serializers.CharField(help_text="USDC balance at the end of the day.")


class MarketAccountSerializer(serializers.Serializer):
    balance = serializers.CharField()
    fees_balance = serializers.CharField(help_text="The platform fee account, USDC.")
    income = serializers.CharField(help_text="Every credit to the market account: round budget surpluses, USDC.")
    outflows = serializers.CharField(help_text="Every debit: what rounds paid providers beyond their buyers, USDC.")
    lowest_balance = serializers.CharField()
    lowest_at = serializers.DateTimeField(allow_null=True)
    threshold = serializers.CharField()
    alert = serializers.BooleanField(help_text="Whether the balance ever fell below the threshold.")
    alert_message = serializers.CharField(allow_blank=True)
    rounds = serializers.IntegerField()
    rounds_in_deficit = serializers.IntegerField()
    days = MarketAccountDaySerializer(many=True)



class MarketAccountView(APIView):
    """The platform market account, for operators (staff only)."""

    permission_classes = [IsAdminUser]

    @extend_schema(responses=MarketAccountSerializer, summary="Market account: balance over time, income, outflows")
    def get(self, request):
        summary = market_account_summary()
        return Response(
            MarketAccountSerializer(
                {
                    "balance": usdc(summary.balance),
                    "fees_balance": usdc(summary.fees_balance),
                    "income": usdc(summary.income),
                    "outflows": usdc(summary.outflows),
                    "lowest_balance": usdc(summary.lowest_balance),
                    "lowest_at": summary.lowest_at,
                    "threshold": usdc(summary.threshold),
                    "alert": summary.alert,
                    "alert_message": market_account_alert_text(summary),
                    "rounds": summary.rounds,
                    "rounds_in_deficit": summary.rounds_in_deficit,
                    "days": [
                        {
                            "day": d.day,
                            "income": usdc(d.income),
                            "outflows": usdc(d.outflows),
                            "balance": usdc(d.balance),
                        }
                        for d in summary.days
                    ],
                }
            ).data
        )
