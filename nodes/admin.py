from django.contrib import admin, messages
from django.db import models

from janction.errors import ApplicationError
from ledger.currencies import from_base_units
from nodes.models import (
    Gpu,
    Node,
    NodeEvent,
    NodeFlag,
    NodeOverlay,
    NodePlacement,
    OverlayHub,
    OverlaySegment,
    OverlaySegmentMember,
    Pool,
    RevokedCertificate,
    VGpu,
)
from nodes.operator import node_operator_drain, node_quarantine, node_release


class GpuInline(admin.TabularInline):
    model = Gpu
    extra = 0
    fields = ["index", "name", "uuid", "memory_bytes", "fake", "utilization_percent", "temperature_celsius"]
    readonly_fields = fields


class VGpuInline(admin.TabularInline):
    model = VGpu
    extra = 0
    fields = ["local_id", "pool", "memory_bytes", "compute_share_percent", "enforcement", "fake", "state", "holder"]
    readonly_fields = fields


class NodeEventInline(admin.TabularInline):
    model = NodeEvent
    extra = 0
    readonly_fields = ["from_state", "to_state", "reason", "at"]


class NodeFlagInline(admin.TabularInline):
    model = NodeFlag
    extra = 0
    readonly_fields = ["code", "detail", "at"]


def _node_action(service, done: str):
    """Return an admin action that calls a node operator service for each selected node and records it."""

    def action(modeladmin, request, queryset):
        changed = 0
        for node in queryset.order_by("pk"):
            try:
                service(node_id=node.pk, reason=f"by {request.user.get_username()} in the admin")
            except ApplicationError as exc:
                modeladmin.message_user(request, f"{node.name}: {exc.message}", messages.ERROR)
                continue
            modeladmin.log_change(request, node, f"{done} (admin action)")
            changed += 1
        if changed:
            modeladmin.message_user(request, f"{done}: {changed} node(s).", messages.SUCCESS)

    return action


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "state", "has_fake_gpus", "runtime", "last_seen_at", "ask_usdc", "ask_paused"]
    list_filter = ["state", "has_fake_gpus", "runtime", "ask_paused"]
    search_fields = ["name", "owner__email", "hostname", "certificate_serial"]
    # The state changes only through the actions (the services), never by editing the field.
    readonly_fields = [
        "state",
        "state_reason",
        "enrollment_token_hash",
        "certificate_serial",
        "certificate_pem",
        "enrolled_at",
        "last_seen_at",
    ]
    # An operator clears has_fake_gpus here once the hardware is verified: the agent cannot.
    inlines = [GpuInline, VGpuInline, NodeEventInline, NodeFlagInline]
    actions = ["quarantine", "release", "drain"]

    @admin.display(description="Ask (USDC/vGPU-h)", ordering="reserve_price_per_hour")
    def ask_usdc(self, node):
        return from_base_units(node.reserve_price_per_hour, "USDC")

    @admin.action(description="Quarantine: take the selected nodes off the market now")
    def quarantine(self, request, queryset):
        _node_action(node_quarantine, "Quarantined")(self, request, queryset)

    @admin.action(description="Release from quarantine (online again once the agent reports)")
    def release(self, request, queryset):
        _node_action(node_release, "Released")(self, request, queryset)

    @admin.action(description="Drain: stop selling, let running work finish")
    def drain(self, request, queryset):
        _node_action(node_operator_drain, "Drained")(self, request, queryset)


@admin.register(Pool)
class PoolAdmin(admin.ModelAdmin):
    list_display = ["name", "architecture", "memory_gib", "created_at"]


class LimitsEnforcedFilter(admin.SimpleListFilter):
    title = "limits"
    parameter_name = "limits"

    def lookups(self, request, model_admin):
        return [("not_enforced", "Not enforced"), ("enforced", "Enforced")]

    def queryset(self, request, queryset):
        if self.value() == "not_enforced":
            return queryset.exclude(limits_not_enforced="")
        if self.value() == "enforced":
            return queryset.filter(limits_not_enforced="")
        return queryset


@admin.register(NodePlacement)
class NodePlacementAdmin(admin.ModelAdmin):
    list_display = ["placement_id", "node", "state", "exit_code", "limits_not_enforced", "reported_at"]
    list_filter = ["state", LimitsEnforcedFilter]
    search_fields = ["placement_id", "node__name"]
    readonly_fields = [field.name for field in NodePlacement._meta.fields]


@admin.register(RevokedCertificate)
class RevokedCertificateAdmin(admin.ModelAdmin):
    list_display = ["serial", "node", "reason", "revoked_at"]
    search_fields = ["serial"]
    readonly_fields = ["revoked_at"]


# -- the overlay (docs/overlay.md): what the control plane assigned, for operators to look at ------------------------
# Read-only: the agents' Hellos, the dispatcher and the release on rental end write these rows, and the hub derives
# its forwarding rules from them every second. A hand edit would change who may reach whom, so there is none.


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(OverlayHub)
class OverlayHubAdmin(ReadOnlyAdmin):
    list_display = ["endpoint", "address", "public_key", "updated_at"]


@admin.register(NodeOverlay)
class NodeOverlayAdmin(ReadOnlyAdmin):
    list_display = ["node", "address", "rtt_ms", "public_key", "updated_at"]
    search_fields = ["node__name", "address", "public_key"]

    @admin.display(description="RTT to hub (ms)", ordering="rtt_us")
    def rtt_ms(self, overlay):
        return f"{overlay.rtt_us / 1000:.2f}" if overlay.rtt_us else "not measured"


class OverlaySegmentMemberInline(admin.TabularInline):
    model = OverlaySegmentMember
    extra = 0
    fields = ["index", "name", "address", "node", "placement_id"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class SegmentLiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return [("yes", "Live"), ("no", "Released")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(released_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(released_at__isnull=False)
        return queryset


@admin.register(OverlaySegment)
class OverlaySegmentAdmin(ReadOnlyAdmin):
    list_display = ["key", "vni", "member_count", "service_ports", "created_at", "released_at"]
    list_filter = [SegmentLiveFilter]
    search_fields = ["key", "members__placement_id", "members__node__name"]
    inlines = [OverlaySegmentMemberInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_members=models.Count("members"))

    @admin.display(description="members", ordering="_members")
    def member_count(self, segment):
        return segment._members
