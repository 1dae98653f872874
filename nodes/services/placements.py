"""Placements as their agents report them: status along the transition table, logs, signed usage."""

import logging
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agent.protocol.signing import usage_is_consistent, verify_usage_report
from janction.errors import ValidationFailed
from nodes.checks import (
    INT32_MAX,
    INT64_MAX,
    AgentMessageInvalid,
    check_int,
    check_text,
)
from nodes.models import (
    PLACEMENT_FINAL_STATES,
    PLACEMENT_TRANSITIONS,
    Node,
    NodeEvent,
    NodePlacement,
    NodeState,
    PlacementLogLine,
    PlacementState,
    UsageReport,
)
from nodes.services.reports import LogChunkReport, PlacementStatusReport, UsageReportIn

AGENT_LOG = logging.getLogger("nodes.agent")
LOG_STREAMS = frozenset({"stdout", "stderr"})


def placement_may_become(current: str, to_state: str) -> bool:
    """Return whether a placement in `current` may move to `to_state` (staying put is allowed)."""
    return to_state == current or to_state in PLACEMENT_TRANSITIONS.get(current, frozenset())


def _owned_placement_for_update(*, node_id: int, placement_id: str) -> NodePlacement:
    placement = NodePlacement.objects.select_for_update().filter(node_id=node_id, placement_id=placement_id).first()
    if placement is None:
        raise ValidationFailed(f"Node {node_id} was never sent placement {placement_id!r}.", code="placement_not_owned")
    return placement


def placement_status_record(*, node_id: int, status: PlacementStatusReport) -> NodePlacement:
    """Store what the node says about one of its placements, along the transition table only."""
    check_text(status.placement_id, field="placement_id", max_length=128)
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=status.placement_id)
        if not placement_may_become(placement.state, status.state):
            if placement.state in PLACEMENT_FINAL_STATES:
                return placement  # a repeated or late report about an ended placement: nothing to undo
            raise AgentMessageInvalid(
                f"Placement {status.placement_id} is {placement.state} and cannot become {status.state}.",
                code="placement_transition_invalid",
            )
        placement.state = status.state
        placement.exit_code = status.exit_code
        placement.message = status.message[:500]
        placement.reported_at = timezone.now()
        fields = ["state", "exit_code", "message", "reported_at"]
        if status.state == PlacementState.RUNNING:
            placement.limits_not_enforced = status.limits_not_enforced[:300]
            fields.append("limits_not_enforced")
        if status.state in PLACEMENT_FINAL_STATES and placement.stopped_at is None:
            placement.stopped_at = placement.reported_at
            fields.append("stopped_at")
        placement.save(update_fields=fields)
    return placement


def placement_stopped(*, placement_ids: list[int], at: datetime) -> int:
    """Record the platform's end of placements (by NodePlacement pk) it settled; usage after it is refused."""
    return NodePlacement.objects.filter(pk__in=placement_ids, stopped_at__isnull=True).update(stopped_at=at)


MAX_LOG_LINE_CHARS = 16 * 1024
MAX_LOG_LINES_PER_CHUNK = 1000


def placement_logs_append(*, node_id: int, chunk: LogChunkReport) -> int:
    """Store a chunk of numbered log lines within the placement's quota, dropping numbers already held.

    Return how many lines were new. Lines beyond the quota (lines or bytes) are dropped and the placement
    is marked truncated: a chatty workload is not an attack, so this costs its sender no strike.
    """
    if chunk.seq < 1 or chunk.stream not in LOG_STREAMS:
        raise ValidationFailed("Log lines are numbered from 1 on stdout or stderr.", code="log_chunk_invalid")
    check_int(chunk.seq, field="seq", high=INT64_MAX - MAX_LOG_LINES_PER_CHUNK)
    check_int(len(chunk.lines), field="the number of lines in a chunk", high=MAX_LOG_LINES_PER_CHUNK)
    check_text(chunk.placement_id, field="placement_id", max_length=128)
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=chunk.placement_id)
        lines_left = settings.AGENT_LOG_LINES_PER_PLACEMENT - placement.log_lines_stored
        bytes_left = settings.AGENT_LOG_BYTES_PER_PLACEMENT - placement.log_bytes_stored
        lines, size = [], 0
        for offset, text in enumerate(chunk.lines):
            text = text[:MAX_LOG_LINE_CHARS].replace("\x00", "")
            encoded = len(text.encode())
            if len(lines) >= lines_left or size + encoded > bytes_left:
                break
            lines.append(PlacementLogLine(placement=placement, seq=chunk.seq + offset, stream=chunk.stream, text=text))
            size += encoded
        truncated = len(lines) < len(chunk.lines)
        if lines:
            PlacementLogLine.objects.bulk_create(lines, ignore_conflicts=True)
        changes = {
            "log_lines_stored": F("log_lines_stored") + len(lines),
            "log_bytes_stored": F("log_bytes_stored") + size,
        }
        if truncated:
            changes["logs_truncated"] = True
        NodePlacement.objects.filter(pk=placement.pk).update(**changes)
        return len(lines)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _offline_periods(*, node_id: int, since: datetime, now: datetime) -> list[tuple[int, int]]:
    """Return the [start, end) milliseconds in which the platform held the node offline since `since`."""
    periods, start = [], None
    events = NodeEvent.objects.filter(node_id=node_id, at__gte=since).order_by("at", "pk").values_list("to_state", "at")
    for to_state, at in events:
        if to_state in (NodeState.OFFLINE, NodeState.QUARANTINED):
            start = start if start is not None else at
        elif start is not None:
            periods.append((_ms(start), _ms(at)))
            start = None
    if start is not None:
        periods.append((_ms(start), _ms(now)))
    return periods


def _usage_check_ranges(report: UsageReportIn) -> None:
    check_int(report.seq, field="seq", low=1)
    check_int(report.interval_start_ms, field="interval_start_ms")
    check_int(report.interval_end_ms, field="interval_end_ms")
    check_int(report.vgpu_count, field="vgpu_count", low=1, high=INT32_MAX)
    check_int(report.vgpu_milliseconds, field="vgpu_milliseconds")
    check_text(report.placement_id, field="placement_id", max_length=128)
    if len(report.signature) > 256:
        raise AgentMessageInvalid("The signature is longer than any ECDSA P-256 signature.")


class UsageRefused(ValidationFailed):
    """A usage report the platform's records contradict: never stored, acknowledged as rejected."""

    code = "usage_report_refused"


def usage_report_record(*, node_id: int, report: UsageReportIn) -> bool:
    """Verify a signed usage report against the platform's records and store it once.

    Return False when it was already stored (ack it again). The interval must lie within the placement's
    life as the platform saw it (from the queued StartPlacement to the platform's stop, or now) and outside
    any time the platform held the node offline; the vGPU count must be what was allocated.
    """
    _usage_check_ranges(report)
    with transaction.atomic():
        placement = _owned_placement_for_update(node_id=node_id, placement_id=report.placement_id)
        node = Node.objects.only("certificate_pem").get(pk=node_id)
        if not usage_is_consistent(report):
            raise ValidationFailed(
                "A usage report needs seq >= 1, a positive interval and vgpu_milliseconds = vgpu_count * its length.",
                code="usage_report_inconsistent",
            )
        if not verify_usage_report(node.certificate_pem, report):
            raise ValidationFailed("The usage report's signature does not verify.", code="usage_report_bad_signature")
        existing = UsageReport.objects.filter(placement=placement, seq=report.seq).first()
        if existing is not None:
            same = (existing.interval_start_ms, existing.interval_end_ms, existing.vgpu_count) == (
                report.interval_start_ms,
                report.interval_end_ms,
                report.vgpu_count,
            )
            if not same:
                raise ValidationFailed(
                    f"Usage report {report.seq} differs from the one already stored.", code="usage_report_conflict"
                )
            return False
        allocated = len(placement.vgpu_local_ids)
        if report.vgpu_count != allocated:
            raise UsageRefused(
                f"The placement was allocated {allocated} vGPU(s), not {report.vgpu_count}.",
                code="usage_report_too_many_vgpus",
            )
        now = timezone.now()
        tolerance_ms = settings.AGENT_USAGE_START_TOLERANCE_SECONDS * 1000
        born_ms = _ms(placement.created_at) - tolerance_ms
        if placement.stopped_at is not None:
            end_ms = _ms(placement.stopped_at) + tolerance_ms
        else:
            end_ms = _ms(now) + settings.AGENT_USAGE_MAX_CLOCK_SKEW_SECONDS * 1000
        if report.interval_end_ms > end_ms and placement.stopped_at is None:
            raise UsageRefused("The usage interval ends in the future.", code="usage_report_in_future")
        if report.interval_start_ms < born_ms or report.interval_end_ms > end_ms:
            raise UsageRefused(
                "The usage interval lies outside the placement's life as the platform recorded it.",
                code="usage_report_outside_placement",
            )
        for off_start, off_end in _offline_periods(node_id=node_id, since=placement.created_at, now=now):
            if report.interval_start_ms < off_end and report.interval_end_ms > off_start:
                raise UsageRefused(
                    "The usage interval covers time the platform held the node offline.",
                    code="usage_report_while_offline",
                )
        if UsageReport.objects.filter(
            placement=placement,
            interval_start_ms__lt=report.interval_end_ms,
            interval_end_ms__gt=report.interval_start_ms,
        ).exists():
            raise ValidationFailed("The usage interval overlaps one already reported.", code="usage_report_overlaps")
        UsageReport.objects.create(
            placement=placement,
            seq=report.seq,
            interval_start_ms=report.interval_start_ms,
            interval_end_ms=report.interval_end_ms,
            vgpu_count=report.vgpu_count,
            vgpu_milliseconds=report.vgpu_milliseconds,
            signature=bytes(report.signature),
        )
    return True
