"""Nodes REST API: a provider's own nodes (never another's) and the pools."""

from django.conf import settings
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from janction.openapi import error_responses
from ledger.currencies import AmountAboveCeiling, AmountField, read_amount, to_base_units
from ledger.errors import InvalidAmount
from nodes.errors import NodeNotFound
from nodes.hooks import default_reserve_price
from nodes.models import Gpu, Node, VGpu
from nodes.selectors import nodes_for_owner
from nodes.services import (
    node_create,
    node_delete,
    node_drain,
    node_rename,
    node_set_ask,
    node_token_regenerate,
    node_undrain,
)


class PriceField(AmountField):
    """A USDC price per vGPU-hour (read by ledger.currencies.read_amount), stored as integer base units."""

    def __init__(self, **kwargs):
        super().__init__(currency="USDC", allow_zero=True, **kwargs)

    def to_internal_value(self, data):
        ceiling = settings.PRICING_MAX_RESERVE_PRICE
        try:
            return read_amount(data, "USDC", allow_zero=True, ceiling=to_base_units(ceiling, "USDC"))
        except AmountAboveCeiling:
            message = f"Reserve prices above {ceiling} USDC per vGPU-hour are refused."
            raise serializers.ValidationError(message) from None
        except InvalidAmount as exc:
            raise serializers.ValidationError(exc.message) from None


class GpuSerializer(serializers.ModelSerializer):
    class Meta:
        model = Gpu
        fields = [
            "index",
            "uuid",
            "name",
            "memory_bytes",
            "compute_capability",
            "architecture",
            "driver_version",
            "cuda_version",
            "mig_capable",
            "mig_enabled",
            "fake",
            "utilization_percent",
            "memory_used_bytes",
            "temperature_celsius",
            "power_milliwatts",
            "telemetry_at",
        ]


class VGpuSerializer(serializers.ModelSerializer):
    pool = serializers.CharField(source="pool.name")

    class Meta:
        model = VGpu
        fields = ["local_id", "pool", "memory_bytes", "compute_share_percent", "enforcement", "fake", "state"]


class NodeSerializer(serializers.ModelSerializer):
    reserve_price = PriceField(source="reserve_price_per_hour", help_text="USDC per vGPU-hour.")
    gpus = GpuSerializer(many=True, read_only=True)
    vgpus = VGpuSerializer(many=True, read_only=True)

    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "state",
            "state_reason",
            "hostname",
            "agent_version",
            "runtime",
            "has_fake_gpus",
            "last_seen_at",
            "enrolled_at",
            "reserve_price",
            "ask_paused",
            "created_at",
            "gpus",
            "vgpus",
        ]
        read_only_fields = [f for f in fields if f not in ("name", "reserve_price", "ask_paused")]


class NodeCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80)
    reserve_price = PriceField(
        required=False, help_text="USDC per vGPU-hour; default: the pool default ask (PRICING_DEFAULT_ASK), never 0."
    )


class NodeUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80, required=False)
    reserve_price = PriceField(required=False)
    ask_paused = serializers.BooleanField(required=False)


EnrollmentSerializer = inline_serializer(
    "Enrollment",
    {
        "node": NodeSerializer(),
        "enrollment_token": serializers.CharField(help_text="Shown once; expires after 24 hours."),
        "agent_command": serializers.CharField(help_text="Run this on the GPU host."),
        "expires_at": serializers.DateTimeField(),
    },
)


def _ticket_response(ticket, status_code):
    return Response(
        {
            "node": NodeSerializer(ticket.node).data,
            "enrollment_token": ticket.token,
            "agent_command": ticket.command,
            "expires_at": ticket.node.enrollment_expires_at,
        },
        status=status_code,
    )


def _node(request, node_id) -> Node:
    node = nodes_for_owner(owner=request.user).filter(pk=node_id).first()
    if node is None:
        raise NodeNotFound(f"You have no node with id {node_id}.")
    return node


class NodeList(APIView):
    @extend_schema(responses=NodeSerializer(many=True), summary="Your nodes")
    def get(self, request):
        return Response(NodeSerializer(nodes_for_owner(owner=request.user), many=True).data)

    @extend_schema(
        request=NodeCreateSerializer,
        responses={201: EnrollmentSerializer, **error_responses(409)},
        summary="Create a node and get its one-time enrollment token",
    )
    def post(self, request):
        serializer = NodeCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ticket = node_create(
            owner=request.user,
            name=serializer.validated_data["name"].strip(),
            reserve_price_per_hour=serializer.validated_data.get("reserve_price", default_reserve_price()),
        )
        return _ticket_response(ticket, status.HTTP_201_CREATED)


class NodeDetail(APIView):
    @extend_schema(responses=NodeSerializer, summary="One of your nodes")
    def get(self, request, node_id: int):
        return Response(NodeSerializer(_node(request, node_id)).data)

    @extend_schema(
        request=NodeUpdateSerializer,
        responses={200: NodeSerializer, **error_responses(409)},
        summary="Rename a node or change its ask",
    )
    def patch(self, request, node_id: int):
        serializer = NodeUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        _node(request, node_id)
        if "name" in data:
            node_rename(owner=request.user, node_id=node_id, name=data["name"].strip())
        if "reserve_price" in data or "ask_paused" in data:
            node_set_ask(
                owner=request.user,
                node_id=node_id,
                reserve_price_per_hour=data.get("reserve_price"),
                paused=data.get("ask_paused"),
            )
        return Response(NodeSerializer(_node(request, node_id)).data)

    @extend_schema(responses={204: None, **error_responses(409)}, summary="Delete a node that runs nothing")
    def delete(self, request, node_id: int):
        node_delete(owner=request.user, node_id=node_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class NodeDrain(APIView):
    @extend_schema(
        request=None, responses={200: NodeSerializer, **error_responses(409)}, summary="Stop selling this node's vGPUs"
    )
    def post(self, request, node_id: int):
        node_drain(owner=request.user, node_id=node_id)
        return Response(NodeSerializer(_node(request, node_id)).data)


class NodeUndrain(APIView):
    @extend_schema(
        request=None, responses={200: NodeSerializer, **error_responses(409)}, summary="Put a drained node back on sale"
    )
    def post(self, request, node_id: int):
        node_undrain(owner=request.user, node_id=node_id)
        return Response(NodeSerializer(_node(request, node_id)).data)


class NodeEnrollmentToken(APIView):
    @extend_schema(
        request=None,
        responses={201: EnrollmentSerializer, **error_responses(409)},
        summary="Issue a new enrollment token",
    )
    def post(self, request, node_id: int):
        return _ticket_response(node_token_regenerate(owner=request.user, node_id=node_id), status.HTTP_201_CREATED)
