"""Node writes, by concern; other apps import from here (docs/architecture.md).

- lifecycle: the provider's controls and the node state machine (drain, quarantine, ban, delete)
- enrollment: tokens, the agent's command, the CSR exchange, certificate checks
- vgpus: vGPU state and the holder protocol (reserve, claim, release)
- ingestion: what the gateway hands in from a connection: Hello, heartbeats, the offline sweep
- placements: placement status along the transition table, logs, signed usage
- commands: the command outbox (node_send) and its delivery
"""

from nodes.services.commands import (
    node_commands_mark_delivered,
    node_commands_pending,
    node_goodbye,
    node_send,
    placement_commands_cancel,
)
from nodes.services.enrollment import (
    DEMO_AGENT_FLAGS,
    ENROLLMENT_TOKEN_PREFIX,
    EnrollmentTicket,
    NodeEnrollment,
    hash_enrollment_token,
    node_authenticate,
    node_enroll,
)
from nodes.services.ingestion import (
    AGENT_LOG,
    KNOWN_ARCHITECTURES,
    GpuClaimed,
    gateway_clock_record,
    hello_check,
    node_flag,
    node_heartbeats_apply,
    node_hello,
    node_mark_stale_offline,
)
from nodes.services.lifecycle import (
    NODE_TRANSITIONS,
    node_ban,
    node_certificate_revoke,
    node_create,
    node_delete,
    node_drain,
    node_quarantine,
    node_rename,
    node_set_ask,
    node_token_regenerate,
    node_transition,
    node_undrain,
)
from nodes.services.placements import (
    LOG_STREAMS,
    MAX_LOG_LINE_CHARS,
    MAX_LOG_LINES_PER_CHUNK,
    UsageRefused,
    placement_logs_append,
    placement_may_become,
    placement_status_record,
    placement_stopped,
    usage_report_record,
)
from nodes.services.reports import (
    GpuReport,
    GpuSampleReport,
    HelloReport,
    LogChunkReport,
    NodeHeartbeat,
    PlacementStatusReport,
    RunningPlacementReport,
    UsageReportIn,
    VGpuReport,
)
from nodes.services.vgpus import VGPU_TRANSITIONS, Holder, vgpu_transition, vgpus_claim, vgpus_release, vgpus_reserve

__all__ = [
    "AGENT_LOG",
    "DEMO_AGENT_FLAGS",
    "ENROLLMENT_TOKEN_PREFIX",
    "KNOWN_ARCHITECTURES",
    "LOG_STREAMS",
    "MAX_LOG_LINES_PER_CHUNK",
    "MAX_LOG_LINE_CHARS",
    "NODE_TRANSITIONS",
    "VGPU_TRANSITIONS",
    "EnrollmentTicket",
    "GpuClaimed",
    "GpuReport",
    "GpuSampleReport",
    "HelloReport",
    "Holder",
    "LogChunkReport",
    "NodeEnrollment",
    "NodeHeartbeat",
    "PlacementStatusReport",
    "RunningPlacementReport",
    "UsageRefused",
    "UsageReportIn",
    "VGpuReport",
    "gateway_clock_record",
    "hash_enrollment_token",
    "hello_check",
    "node_authenticate",
    "node_ban",
    "node_certificate_revoke",
    "node_commands_mark_delivered",
    "node_commands_pending",
    "node_create",
    "node_delete",
    "node_drain",
    "node_enroll",
    "node_flag",
    "node_goodbye",
    "node_heartbeats_apply",
    "node_hello",
    "node_mark_stale_offline",
    "node_quarantine",
    "node_rename",
    "node_send",
    "node_set_ask",
    "node_token_regenerate",
    "node_transition",
    "node_undrain",
    "placement_commands_cancel",
    "placement_logs_append",
    "placement_may_become",
    "placement_status_record",
    "placement_stopped",
    "usage_report_record",
    "vgpu_transition",
    "vgpus_claim",
    "vgpus_release",
    "vgpus_reserve",
]
