from django.contrib import admin

from nodes.models import Gpu, Node, NodeEvent, NodeFlag, NodePlacement, Pool, RevokedCertificate, VGpu


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


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "state", "has_fake_gpus", "runtime", "last_seen_at", "reserve_price_per_hour"]
    list_filter = ["state", "has_fake_gpus", "runtime"]
    search_fields = ["name", "owner__email", "hostname", "certificate_serial"]
    readonly_fields = ["enrollment_token_hash", "certificate_serial", "certificate_pem", "enrolled_at", "last_seen_at"]
    # An operator clears has_fake_gpus here once the hardware is verified: the agent cannot.
    inlines = [GpuInline, VGpuInline, NodeEventInline, NodeFlagInline]


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
