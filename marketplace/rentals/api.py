"""Rentals REST API: submit, list, detail, cancel and logs (owner only; other users' rentals are 404)."""

from decimal import ROUND_HALF_EVEN, Decimal

import django_filters
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.api import IsoDateTimeFilter
from janction.openapi import error_responses
from ledger.currencies import AMOUNT_PATTERN, AMOUNT_RULE, USDC_SCALE, usdc
from ledger.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from marketplace.rentals.errors import RentalInvalid
from marketplace.rentals.models import Rental, RentalEvent, RentalPlacement, RentalState
from marketplace.rentals.selectors import (
    rental_env_masked,
    rental_for_owner,
    rental_log_lines,
    rental_log_total,
    rental_pause_log,
    rentals_for_owner,
)
from marketplace.rentals.services import rental_cancel, rental_submit
from marketplace.svc.selectors import service_urls
from nodes.availability import node_reliability
from nodes.availability_api import ReliabilitySerializer
from nodes.models import PlacementLogLine


@extend_schema_field({"type": "string", "pattern": AMOUNT_PATTERN, "example": "1.25"})
class RawAmountField(serializers.JSONField):
    """The raw value of an amount, documented as ledger.currencies' decimal string; the service reads it."""


class RentalSubmitSerializer(serializers.Serializer):
    """Raw values; the service checks each one and says what to change."""

    pool = serializers.JSONField(help_text='Pool name, e.g. "ada-12g".')
    vgpus = serializers.JSONField(help_text="Number of vGPUs (all on one or several nodes of the pool).")
    max_price_per_hour = RawAmountField(help_text='Most you pay per vGPU-hour, USDC decimal string: "1.25".')
    max_duration_seconds = serializers.JSONField(help_text="Longest run time; what is unused is refunded.")
    image = serializers.JSONField(help_text="OCI image reference, e.g. docker.io/library/python:3.12.")
    command = serializers.JSONField(required=False, default=list, help_text="List of strings.")
    env = serializers.JSONField(required=False, default=dict, help_text="Name to string value, 64 KiB in all.")
    secret_env = serializers.JSONField(required=False, default=list, help_text="Names in env whose values are masked.")
    ports = serializers.JSONField(required=False, default=list, help_text="Container ports to expose.")
    expose = serializers.JSONField(
        required=False,
        default=list,
        help_text='HTTP ports reached at /svc/<slug>/<name>/, e.g. [{"name": "api", "port": 8000}].',
    )
    public = serializers.JSONField(required=False, default=False, help_text="Anyone may call the service.")
    restart_on_interruption = serializers.JSONField(required=False, default=False)
    pausable = serializers.JSONField(
        required=False, default=False, help_text="The workload may be frozen while a node's owner uses the GPU."
    )
    accepts_interruptible = serializers.JSONField(
        required=False, default=False, help_text="Buy interruptible capacity (priced apart) instead of dedicated."
    )
    match_deadline_seconds = serializers.JSONField(required=False, default=None, allow_null=True)
    min_provider_score = serializers.JSONField(
        required=False,
        default=None,
        allow_null=True,
        help_text='Least provider (node) score in [0, 1], e.g. "0.6": the rental only lands on nodes scoring at least '
        "that; a round without such nodes leaves it waiting. Leave it out for the pool's own minimum.",
    )
    internet_egress = serializers.JSONField(
        required=False,
        default=False,
        allow_null=True,  # the service then says what to send
        help_text="The workload may reach the internet (never the provider's LAN or host); only nodes that allow it.",
    )


class RentalEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = RentalEvent
        fields = ["from_state", "to_state", "reason", "at"]


class RentalPlacementSerializer(serializers.ModelSerializer):
    buyer_price_per_vgpu_hour = serializers.SerializerMethodField()
    charged = serializers.SerializerMethodField()
    billed_vgpu_seconds = serializers.SerializerMethodField()
    node_reliability = serializers.SerializerMethodField(
        help_text="The node's share of scheduled availability delivered and interruptions per 100 rental-hours."
    )

    class Meta:
        model = RentalPlacement
        fields = [
            "placement_id",
            "node",
            "vgpu_local_ids",
            "observed_state",
            "exit_code",
            "buyer_price_per_vgpu_hour",
            "billed_vgpu_seconds",
            "charged",
            "settled_at",
            "node_reliability",
        ]

    @extend_schema_field(ReliabilitySerializer)
    def get_node_reliability(self, placement: RentalPlacement) -> dict:
        return ReliabilitySerializer(node_reliability(node_id=placement.node_id)).data

    def get_buyer_price_per_vgpu_hour(self, placement: RentalPlacement) -> str:
        # Exact: a Decimal quotient of integer base units, never a float.
        per_unit = Decimal(placement.buyer_payment_per_hour) / placement.bid_units / USDC_SCALE
        return str(per_unit.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))

    def get_charged(self, placement: RentalPlacement) -> str:
        return usdc(placement.buyer_charged)

    def get_billed_vgpu_seconds(self, placement: RentalPlacement) -> str:
        return f"{placement.metered_vgpu_ms / 1000:.3f}"


class RentalSerializer(serializers.ModelSerializer):
    pool = serializers.CharField(source="pool.name")
    env = serializers.SerializerMethodField(help_text="Secret values are masked.")
    max_price_per_hour = serializers.SerializerMethodField()
    held = serializers.SerializerMethodField(help_text="What this rental still holds in escrow, USDC.")
    charged = serializers.SerializerMethodField()
    refunded = serializers.SerializerMethodField()
    service_urls = serializers.SerializerMethodField(help_text="Each exposed port's URL, by port name.")

    class Meta:
        model = Rental
        fields = [
            "id",
            "state",
            "state_reason",
            "pool",
            "vgpus",
            "max_price_per_hour",
            "max_duration_seconds",
            "image",
            "command",
            "env",
            "secret_env_keys",
            "ports",
            "expose",
            "service_slug",
            "service_public",
            "service_urls",
            "restart_on_interruption",
            "pausable",
            "accepts_interruptible",
            "min_provider_score",
            "internet_egress",
            "match_deadline",
            "attempt",
            "held",
            "charged",
            "refunded",
            "created_at",
            "started_at",
            "ended_at",
            "settled_at",
        ]

    def get_service_urls(self, rental: Rental) -> dict[str, str]:
        return service_urls(rental)

    def get_env(self, rental: Rental) -> dict:
        return rental_env_masked(rental)

    def get_max_price_per_hour(self, rental: Rental) -> str:
        return usdc(rental.max_price_per_hour)

    def get_held(self, rental: Rental) -> str:
        return usdc(rental.escrow_held)

    def get_charged(self, rental: Rental) -> str:
        return usdc(rental.charged)

    def get_refunded(self, rental: Rental) -> str:
        return usdc(rental.refunded)


class PauseSerializer(serializers.Serializer):
    placement = serializers.CharField()
    paused_at = serializers.DateTimeField()
    resumed_at = serializers.DateTimeField(allow_null=True)
    reason = serializers.CharField()
    ended_by = serializers.CharField(help_text="resumed, or the placement's final state when it ended paused.")


class RentalDetailSerializer(RentalSerializer):
    events = RentalEventSerializer(many=True)
    placements = RentalPlacementSerializer(many=True)
    pauses = serializers.SerializerMethodField(help_text="The pause log: when a node's owner froze the workload.")

    class Meta(RentalSerializer.Meta):
        fields = [*RentalSerializer.Meta.fields, "events", "placements", "pauses"]

    @extend_schema_field(PauseSerializer(many=True))
    def get_pauses(self, rental: Rental) -> list:
        return PauseSerializer(rental_pause_log(rental=rental), many=True).data


class RentalFilter(django_filters.FilterSet):
    state = django_filters.MultipleChoiceFilter(choices=RentalState.choices)
    pool = django_filters.CharFilter(field_name="pool__name")
    since = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Rental
        fields = ["state", "pool", "since", "until"]


class RentalList(generics.ListAPIView):
    serializer_class = RentalSerializer
    filterset_class = RentalFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Rental.objects.none()
        return rentals_for_owner(owner=self.request.user)

    @extend_schema(
        request=RentalSubmitSerializer,
        responses={201: RentalDetailSerializer, **error_responses(402)},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        summary="Rent vGPUs: escrow the most it can cost and bid in the next round",
    )
    @idempotent
    def post(self, request):
        if not isinstance(request.data, dict):
            raise RentalInvalid("Send a JSON object describing the rental.")
        serializer = RentalSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if not isinstance(data["max_price_per_hour"], str):
            raise RentalInvalid(
                f"Send max_price_per_hour (USDC per vGPU-hour) as {AMOUNT_RULE}.",
                detail={"field": "max_price_per_hour"},
            )
        rental = rental_submit(
            owner=request.user,
            pool_name=data["pool"],
            vgpus=data["vgpus"],
            max_price_per_hour=data["max_price_per_hour"],
            max_duration_seconds=data["max_duration_seconds"],
            image=data["image"],
            command=data["command"],
            env=data["env"],
            secret_env=data["secret_env"],
            ports=data["ports"],
            restart_on_interruption=data["restart_on_interruption"],
            match_deadline_seconds=data["match_deadline_seconds"],
            pausable=data["pausable"],
            accepts_interruptible=data["accepts_interruptible"],
            min_provider_score=data["min_provider_score"],
            expose=data["expose"],
            service_public=data["public"],
            internet_egress=data["internet_egress"],
        )
        rental = rental_for_owner(owner=request.user, rental_id=rental.pk)
        return Response(RentalDetailSerializer(rental).data, status=status.HTTP_201_CREATED)


class RentalDetail(APIView):
    @extend_schema(responses=RentalDetailSerializer, summary="One of your rentals, with its events and placements")
    def get(self, request, rental_id: int):
        return Response(RentalDetailSerializer(rental_for_owner(owner=request.user, rental_id=rental_id)).data)


class RentalCancel(APIView):
    @extend_schema(
        request=None,
        responses=RentalDetailSerializer,
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        summary="Cancel a rental",
    )
    @idempotent
    def post(self, request, rental_id: int):
        rental_cancel(owner=request.user, rental_id=rental_id)
        return Response(RentalDetailSerializer(rental_for_owner(owner=request.user, rental_id=rental_id)).data)


class LogLineSerializer(serializers.Serializer):
    placement = serializers.CharField(source="placement.placement_id")
    seq = serializers.IntegerField()
    stream = serializers.CharField()
    text = serializers.CharField()


class RentalLogs(generics.ListAPIView):
    serializer_class = LogLineSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no rental
            return PlacementLogLine.objects.none()
        rental = rental_for_owner(owner=self.request.user, rental_id=self.kwargs["rental_id"])
        return rental_log_lines(rental=rental)


class RentalLogsDownload(APIView):
    @extend_schema(responses={(200, "text/plain"): str}, summary="Download a rental's log lines as text")
    def get(self, request, rental_id: int):
        rental = rental_for_owner(owner=request.user, rental_id=rental_id)
        lines = [line.text for line in rental_log_lines(rental=rental)]
        total = rental_log_total(rental=rental)
        if total > len(lines):
            lines.append(f"[janction: {total - len(lines)} more line(s) not kept; the cap is {len(lines)}]")
        response = HttpResponse("".join(f"{line}\n" for line in lines), content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="rental-{rental.pk}.log"'
        return response
