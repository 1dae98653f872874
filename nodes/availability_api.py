"""REST API of a node's availability policy (colocation): the provider's own nodes only."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.openapi import error_responses
from nodes.availability import (
    MAX_WINDOWS,
    is_interruptible,
    node_availability_set,
    node_reliability,
    policy_in_market,
)
from nodes.errors import NodeNotFound
from nodes.models import AvailabilityMode, NodeAvailability
from nodes.selectors import nodes_for_owner


class WindowSerializer(serializers.Serializer):
    day = serializers.JSONField(help_text="0 (Monday) to 6 (Sunday), or the day's English name.")
    start = serializers.CharField(max_length=5, help_text="HH:MM, in the node's time zone.")
    end = serializers.CharField(max_length=5, help_text="HH:MM after start; 24:00 ends at midnight.")


class AvailabilityInSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=AvailabilityMode.choices)
    time_zone = serializers.CharField(max_length=64, default="UTC", help_text="IANA name, e.g. Europe/Madrid.")
    windows = serializers.ListField(
        child=serializers.DictField(), max_length=MAX_WINDOWS, default=list, help_text="Weekly windows (schedule)."
    )
    utilization_threshold_percent = serializers.IntegerField(required=False, min_value=1, max_value=100)
    memory_threshold_percent = serializers.IntegerField(required=False, min_value=1, max_value=100)
    grace_seconds = serializers.IntegerField(required=False, min_value=0, max_value=3600)


class ReliabilitySerializer(serializers.Serializer):
    scheduled_hours = serializers.FloatField(help_text="Hours the policy promised over the last 7 days.")
    delivered_share = serializers.FloatField(allow_null=True, help_text="Share of those hours actually delivered.")
    rental_hours = serializers.FloatField()
    interruptions = serializers.IntegerField(help_text="Placements frozen or lost on the node.")
    interruptions_per_100_rental_hours = serializers.FloatField(allow_null=True)


class AvailabilitySerializer(serializers.ModelSerializer):
    windows = WindowSerializer(many=True)
    in_market = serializers.SerializerMethodField(help_text="Whether the policy lets the node sell vGPUs now.")
    capacity = serializers.SerializerMethodField(help_text="interruptible or dedicated.")
    reliability = serializers.SerializerMethodField()

    class Meta:
        model = NodeAvailability
        fields = [
            "mode",
            "time_zone",
            "windows",
            "utilization_threshold_percent",
            "memory_threshold_percent",
            "grace_seconds",
            "owner_active",
            "owner_active_since",
            "owner_reason",
            "in_market",
            "capacity",
            "reliability",
        ]

    def get_in_market(self, policy) -> bool:
        return policy_in_market(policy, timezone.now())

    @extend_schema_field(ReliabilitySerializer)
    def get_reliability(self, policy) -> dict:
        return ReliabilitySerializer(node_reliability(node_id=policy.node_id)).data

    def get_capacity(self, policy) -> str:
        return "interruptible" if is_interruptible(policy) else "dedicated"


class NodeAvailabilityView(APIView):
    def _node(self, request, node_id: int):
        node = nodes_for_owner(owner=request.user).filter(pk=node_id).first()
        if node is None:
            raise NodeNotFound(f"You have no node with id {node_id}.")
        return node

    @extend_schema(responses=AvailabilitySerializer, summary="A node's availability policy")
    def get(self, request, node_id: int):
        node = self._node(request, node_id)
        policy = NodeAvailability.objects.filter(node=node).first() or NodeAvailability(node=node)
        return Response(AvailabilitySerializer(policy).data)

    @extend_schema(
        request=AvailabilityInSerializer,
        responses={200: AvailabilitySerializer, **error_responses(400, 404)},
        summary="Set when a node's vGPUs are on sale: always, a weekly schedule, or when its owner is idle",
    )
    def put(self, request, node_id: int):
        serializer = AvailabilityInSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self._node(request, node_id)
        policy = node_availability_set(owner=request.user, node_id=node_id, **serializer.validated_data)
        return Response(AvailabilitySerializer(policy).data)
