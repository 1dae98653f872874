"""The resource pool: provider nodes, their GPUs, the vGPUs sliced from them, and pools of equal vGPUs."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Pool(models.Model):
    """All vGPUs of one architecture family and memory size: one fungible good, e.g. `ada-12g`."""

    name = models.CharField(max_length=40, unique=True)
    architecture = models.CharField(max_length=20)
    memory_gib = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class NodeState(models.TextChoices):
    PENDING = "pending", "Pending enrollment"
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    DRAINING = "draining", "Draining"
    QUARANTINED = "quarantined", "Quarantined"


class Node(models.Model):
    """One provider host running the agent."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="nodes")
    name = models.CharField(max_length=80)
    state = models.CharField(max_length=12, choices=NodeState.choices, default=NodeState.PENDING)
    state_reason = models.CharField(max_length=200, blank=True)
    # Enrollment: a one-time token (only its SHA-256 is kept) that expires.
    enrollment_token_hash = models.CharField(max_length=64, blank=True, db_index=True)
    enrollment_expires_at = models.DateTimeField(null=True, blank=True)
    enrolled_at = models.DateTimeField(null=True, blank=True)
    # Identity: the client certificate the platform CA issued; the gateway knows a node by its serial.
    certificate_serial = models.CharField(max_length=64, blank=True, db_index=True)
    certificate_pem = models.TextField(blank=True)
    # What the agent said in its last Hello.
    hostname = models.CharField(max_length=255, blank=True)
    agent_version = models.CharField(max_length=40, blank=True)
    runtime = models.CharField(max_length=20, blank=True)
    network_unsupported = models.BooleanField(default=False)
    # The agent runs with --allow-egress: rentals that ask for internet egress may be placed here.
    egress_allowed = models.BooleanField(default=False)
    has_fake_gpus = models.BooleanField(default=False, help_text="Declared with --fake-gpus: no real hardware.")
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # The provider's ask: reserve price per vGPU-hour in USDC base units (micro-USDC).
    reserve_price_per_hour = models.BigIntegerField(default=0)
    ask_paused = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"], condition=Q(deleted_at__isnull=True), name="nodes_node_unique_live_name"
            ),
            models.CheckConstraint(condition=Q(reserve_price_per_hour__gte=0), name="nodes_node_price_non_negative"),
        ]

    def __str__(self) -> str:
        return self.name


class NodeEvent(models.Model):
    """A state change of a node, with why it happened."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=12, choices=NodeState.choices)
    to_state = models.CharField(max_length=12, choices=NodeState.choices)
    reason = models.CharField(max_length=200)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.from_state} -> {self.to_state}"


class Gpu(models.Model):
    """A physical (or declared fake) GPU of a node, with its latest telemetry."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveIntegerField()
    uuid = models.CharField(max_length=100, db_index=True)
    name = models.CharField(max_length=100)
    memory_bytes = models.PositiveBigIntegerField()
    compute_capability = models.CharField(max_length=10)
    architecture = models.CharField(max_length=20)
    driver_version = models.CharField(max_length=40, blank=True)
    cuda_version = models.CharField(max_length=20, blank=True)
    mig_capable = models.BooleanField(default=False)
    mig_enabled = models.BooleanField(default=False)
    fake = models.BooleanField(default=False)
    utilization_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    memory_used_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    temperature_celsius = models.PositiveSmallIntegerField(null=True, blank=True)
    power_milliwatts = models.PositiveIntegerField(null=True, blank=True)
    compute_processes = models.PositiveIntegerField(null=True, blank=True)
    telemetry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["node", "index"]
        constraints = [
            models.UniqueConstraint(fields=["node", "index"], name="nodes_gpu_unique_index"),
            # A real GPU is in one machine: a second node claiming its UUID is refused (and flagged).
            models.UniqueConstraint(fields=["uuid"], condition=Q(fake=False), name="nodes_gpu_unique_real_uuid"),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.index}{' (fake)' if self.fake else ''}"


class VGpuState(models.TextChoices):
    FREE = "free", "Free"
    RESERVED = "reserved", "Reserved"
    BUSY = "busy", "Busy"
    OFFLINE = "offline", "Offline"


class VGpu(models.Model):
    """An equal slice of a GPU that is sold as one unit of its pool."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="vgpus")
    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="vgpus")
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="vgpus")
    local_id = models.CharField(max_length=40)
    memory_bytes = models.PositiveBigIntegerField()
    compute_share_percent = models.PositiveSmallIntegerField()
    enforcement = models.CharField(max_length=10)
    enforcement_env = models.JSONField(default=dict, blank=True)
    mig_device_uuid = models.CharField(max_length=100, blank=True)
    fake = models.BooleanField(default=False)
    state = models.CharField(max_length=10, choices=VGpuState.choices, default=VGpuState.OFFLINE)
    # Set while reserved or busy: the placement using this vGPU (opaque id owned by the rentals code).
    holder = models.CharField(max_length=64, blank=True)
    state_changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["node", "local_id"]
        constraints = [
            models.UniqueConstraint(fields=["node", "local_id"], name="nodes_vgpu_unique_local_id"),
            models.CheckConstraint(
                condition=Q(state__in=["free", "offline"], holder="")
                | Q(state__in=["reserved", "busy"]) & ~Q(holder=""),
                name="nodes_vgpu_holder_matches_state",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.node_id}/{self.local_id} ({self.pool_id})"


class PlacementState(models.TextChoices):
    """Where a placement is, as the platform last heard it: `requested` until its agent reports."""

    REQUESTED = "requested", "Requested"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    # No agent reports it yet: the transition table keeps room for a later pause/resume.
    PAUSED = "paused", "Paused"
    EXITED = "exited", "Exited"
    FAILED = "failed", "Failed"
    LOST = "lost", "Lost"


_LIVE_ENDS = frozenset({PlacementState.EXITED, PlacementState.FAILED, PlacementState.LOST})
# Which placement state may follow which: forward only, plus paused <-> running. The one table both the
# gateway (what an agent may report) and the rentals code (what has ended) read.
PLACEMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    PlacementState.REQUESTED: frozenset({PlacementState.STARTING, PlacementState.RUNNING}) | _LIVE_ENDS,
    PlacementState.STARTING: frozenset({PlacementState.RUNNING}) | _LIVE_ENDS,
    PlacementState.RUNNING: frozenset({PlacementState.PAUSED}) | _LIVE_ENDS,
    PlacementState.PAUSED: frozenset({PlacementState.RUNNING}) | _LIVE_ENDS,
    PlacementState.EXITED: frozenset(),
    PlacementState.FAILED: frozenset(),
    PlacementState.LOST: frozenset(),
}
# The states a placement never leaves.
PLACEMENT_FINAL_STATES = frozenset(state for state, after in PLACEMENT_TRANSITIONS.items() if not after)


class NodePlacement(models.Model):
    """A placement the platform sent to a node, with what the node last reported about it.

    A row exists from the moment `node_send` queues its StartPlacement: it is how the gateway
    knows which node owns a placement id. The rentals code reads it; the gateway writes it.
    """

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="placements")
    placement_id = models.CharField(max_length=128, unique=True)
    # A PlacementState (no `choices`, so adding one needs no migration): "requested" until the agent reports.
    state = models.CharField(max_length=12, default=PlacementState.REQUESTED)
    vgpu_local_ids = models.JSONField(default=list)
    exit_code = models.IntegerField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)
    started_at_ms = models.BigIntegerField(default=0)
    # Highest usage and log sequence numbers the agent said it generated (from Hello).
    last_usage_seq = models.PositiveBigIntegerField(default=0)
    last_log_seq = models.PositiveBigIntegerField(default=0)
    reported_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Non-empty when the agent runs the workload without enforcing all its limits, saying which and why.
    limits_not_enforced = models.CharField(max_length=300, blank=True)
    # The platform's own end of the placement: when it first learned of a final state or settled it.
    # Usage after it (beyond the clock-skew allowance) is refused.
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Log quota bookkeeping (AGENT_LOG_LINES_PER_PLACEMENT, AGENT_LOG_BYTES_PER_PLACEMENT).
    log_lines_stored = models.PositiveIntegerField(default=0)
    log_bytes_stored = models.PositiveBigIntegerField(default=0)
    logs_truncated = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"{self.placement_id} on {self.node_id} ({self.state})"


class PlacementLogLine(models.Model):
    """One numbered log line of a placement (numbers are shared by stdout and stderr)."""

    placement = models.ForeignKey(NodePlacement, on_delete=models.CASCADE, related_name="log_lines")
    seq = models.PositiveBigIntegerField()
    stream = models.CharField(max_length=6)
    text = models.TextField()

    class Meta:
        ordering = ["placement", "seq"]
        constraints = [models.UniqueConstraint(fields=["placement", "seq"], name="nodes_log_line_unique_seq")]

    def __str__(self) -> str:
        return f"{self.placement_id}#{self.seq} {self.stream}"


class UsageReport(models.Model):
    """A usage report whose signature by the node key was verified, stored once per (placement, seq)."""

    placement = models.ForeignKey(NodePlacement, on_delete=models.PROTECT, related_name="usage_reports")
    seq = models.PositiveBigIntegerField()
    interval_start_ms = models.BigIntegerField()
    interval_end_ms = models.BigIntegerField()
    vgpu_count = models.PositiveIntegerField()
    vgpu_milliseconds = models.PositiveBigIntegerField()
    # DER ECDSA-SHA256 signature over agent.protocol.signing.canonical_usage_bytes: evidence for disputes.
    signature = models.BinaryField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["placement", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["placement", "seq"], name="nodes_usage_report_unique_seq"),
            models.CheckConstraint(
                condition=Q(interval_end_ms__gt=models.F("interval_start_ms")), name="nodes_usage_report_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"usage {self.placement_id}#{self.seq}"


class NodeCommand(models.Model):
    """Outbox of control messages for a node; the gateway holding the node's stream delivers them in order."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="commands")
    # The ControlMessage in protobuf's JSON mapping, e.g. {"stopPlacement": {"placementId": "p-1"}}.
    message = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # Not delivered after this moment (a StartPlacement's expires_at_ms); null: no expiry.
    expires_at = models.DateTimeField(null=True, blank=True)
    # Dropped undelivered: it expired, or the placement it starts was settled first.
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]
        indexes = [
            models.Index(fields=["node", "id"], condition=Q(delivered_at__isnull=True), name="nodes_command_pending")
        ]

    def __str__(self) -> str:
        return f"command {self.pk} for node {self.node_id}"


class NodeFlag(models.Model):
    """Evidence that a node's agent claimed something the platform could not believe, for operators."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="flags")
    code = models.CharField(max_length=40)
    detail = models.CharField(max_length=500)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-pk"]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.code}"


class RevokedCertificate(models.Model):
    """A client certificate the gateway refuses at every Connect, whatever its node's state."""

    serial = models.CharField(max_length=64, unique=True)
    node = models.ForeignKey(Node, on_delete=models.SET_NULL, null=True, blank=True, related_name="revocations")
    reason = models.CharField(max_length=200)
    revoked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"revoked {self.serial}"


class GatewayClock(models.Model):
    """How long the gateway has been recording heartbeats without a gap (one row per gateway name).

    `recording_since` is when the gateway started or its database came back; `recorded_at` is its last
    successful heartbeat flush. Nodes are judged silent only over time the gateway could record.
    """

    name = models.CharField(max_length=40, unique=True)
    recording_since = models.DateTimeField()
    recorded_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: since {self.recording_since}"


# -- Colocation (issue 19): the owner's own use comes first. Logic lives in nodes/availability.py. --------------


class AvailabilityMode(models.TextChoices):
    ALWAYS = "always", "Always (dedicated)"
    SCHEDULE = "schedule", "Weekly schedule (interruptible)"
    WHEN_IDLE = "when_idle", "When the owner is not using it (interruptible)"


class NodeAvailability(models.Model):
    """A node's availability policy, and what its agent last claimed about the owner's activity."""

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="availability")
    mode = models.CharField(max_length=10, choices=AvailabilityMode.choices, default=AvailabilityMode.ALWAYS)
    # IANA time zone the weekly windows are in, e.g. "Europe/Madrid".
    time_zone = models.CharField(max_length=64, default="UTC")
    # [{"day": 0..6 (Monday = 0), "start": "HH:MM", "end": "HH:MM" (end may be "24:00")}, ...]
    windows = models.JSONField(default=list, blank=True)
    utilization_threshold_percent = models.PositiveSmallIntegerField(default=30)
    memory_threshold_percent = models.PositiveSmallIntegerField(default=10)
    grace_seconds = models.PositiveIntegerField(default=60)
    owner_active = models.BooleanField(default=False)
    owner_active_since = models.DateTimeField(null=True, blank=True)
    owner_reason = models.CharField(max_length=300, blank=True)
    # What the agent was last told about the schedule (outside every window: the owner's time).
    schedule_owner_time = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(utilization_threshold_percent__gte=1, utilization_threshold_percent__lte=100)
                & Q(memory_threshold_percent__gte=1, memory_threshold_percent__lte=100),
                name="nodes_availability_thresholds_in_range",
            )
        ]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.mode}"


class OwnerPeriod(models.Model):
    """A span in which a node's agent said its owner was using the GPUs (evidence for reliability)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="owner_periods")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["node"], condition=Q(ended_at__isnull=True), name="nodes_owner_period_one_open"
            )
        ]

    def __str__(self) -> str:
        return f"{self.node_id}: owner from {self.started_at}"


class PlacementPause(models.Model):
    """One frozen span of a placement, as its agent claimed it (clamped to the platform's records).

    Usage reports overlapping it are refused; the buyer sees these rows as the rental's pause log.
    """

    placement = models.ForeignKey(NodePlacement, on_delete=models.CASCADE, related_name="pauses")
    paused_at_ms = models.BigIntegerField()
    resumed_at_ms = models.BigIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    # How it ended: "resumed", or the placement's final state ("exited", "lost", ...).
    ended_by = models.CharField(max_length=12, blank=True)

    class Meta:
        ordering = ["placement", "paused_at_ms"]
        constraints = [
            models.UniqueConstraint(
                fields=["placement"], condition=Q(resumed_at_ms__isnull=True), name="nodes_pause_one_open"
            ),
            models.CheckConstraint(
                condition=Q(resumed_at_ms__isnull=True) | Q(resumed_at_ms__gte=models.F("paused_at_ms")),
                name="nodes_pause_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.placement_id} paused at {self.paused_at_ms}"


class GpuTelemetrySample(models.Model):
    """A GPU's utilisation and memory at one moment, kept from heartbeats (at most one per GPU per interval).

    The Gpu row holds only the latest values; these rows are the history the rental and node charts draw.
    """

    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="telemetry")
    at = models.DateTimeField()
    utilization_percent = models.PositiveSmallIntegerField()
    memory_used_bytes = models.PositiveBigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["gpu", "at"], name="nodes_gpu_telemetry_gpu_at")]

    def __str__(self) -> str:
        return f"gpu {self.gpu_id} at {self.at:%H:%M:%S}: {self.utilization_percent}%"


# -- the overlay network (docs/overlay.md) ---------------------------------------------------------------------


class OverlayHub(models.Model):
    """The platform's WireGuard hub, as its `overlay_hub` process registered itself (one row)."""

    public_key = models.CharField(max_length=44)
    endpoint = models.CharField(max_length=255, help_text="UDP HOST:PORT the agents dial")
    address = models.GenericIPAddressField(protocol="IPv4")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"overlay hub {self.endpoint}"


class NodeOverlay(models.Model):
    """A node's place on the overlay: its WireGuard public key (from its Hello) and its overlay address."""

    node = models.OneToOneField(Node, on_delete=models.CASCADE, related_name="overlay")
    public_key = models.CharField(max_length=44, unique=True)
    address = models.GenericIPAddressField(protocol="IPv4", unique=True)
    # Round trip to the hub over the overlay, as the agent last measured it (a claim, used only for ties).
    rtt_us = models.PositiveIntegerField(default=0)
    # The UDP HOST:PORT the hub last saw this node's WireGuard packets come from (its NAT's mapping): what the
    # node's segment peers dial for a direct path. Empty until the first handshake with the hub.
    endpoint = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"node {self.node_id} at {self.address}"


class OverlaySegment(models.Model):
    """A rental's VxLAN segment (multi-node, or a service): its VNI is unique among the segments not yet released."""

    key = models.CharField(max_length=64, unique=True, help_text="what it serves, e.g. rental-12-34")
    vni = models.PositiveIntegerField()
    # The container ports the service endpoint reaches over this segment (the rental's exposed ports): the hub
    # joins a segment with any as a member of its own (docs/overlay.md, "The service endpoint").
    service_ports = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["vni"], condition=models.Q(released_at__isnull=True), name="overlay_segment_live_vni_unique"
            ),
            models.CheckConstraint(condition=models.Q(vni__gte=1), name="overlay_segment_vni_positive"),
        ]

    def __str__(self) -> str:
        return f"segment {self.key} (VNI {self.vni})"


class OverlaySegmentMember(models.Model):
    """One placement on a segment: its host, its index and its address and name on the segment."""

    segment = models.ForeignKey(OverlaySegment, on_delete=models.CASCADE, related_name="members")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="+")
    placement_id = models.CharField(max_length=64)
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=63)
    address = models.GenericIPAddressField(protocol="IPv4")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "index"], name="overlay_member_index_unique"),
            models.UniqueConstraint(fields=["segment", "node"], name="overlay_member_node_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.address}) on segment {self.segment_id}"
