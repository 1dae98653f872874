"""Colocation on the platform: a node's availability policy, the owner's activity and placements' pauses.

A node is in the market when its policy lets it be: `always`; `schedule` inside one of its weekly windows
(in the node's time zone); `when_idle` while its agent does not report the owner active. Capacity a
policy can take back (schedule, when_idle) is *interruptible*; `always` is *dedicated*.

Pause and resume reach the platform as the agent's claims (PlacementStatus PAUSED / RUNNING, OwnerActivity):
each is clamped to the platform's own records (never before usage already stored, never in the future),
and usage reports overlapping a recorded pause are refused, so frozen time is never charged.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from janction.errors import ValidationFailed
from nodes.checks import check_int, check_text
from nodes.errors import NodeNotFound
from nodes.models import (
    AvailabilityMode,
    Node,
    NodeAvailability,
    NodeCommand,
    NodeEvent,
    NodeFlag,
    NodePlacement,
    NodeState,
    OwnerPeriod,
    PlacementPause,
    UsageReport,
)
from nodes.signals import placement_interrupted

log = logging.getLogger("nodes.availability")

INTERRUPTIBLE_MODES = frozenset({AvailabilityMode.SCHEDULE, AvailabilityMode.WHEN_IDLE})
MAX_WINDOWS = 70
MAX_GRACE_SECONDS = 3600
TIME = re.compile(r"^(?P<hour>[01]\d|2[0-4]):(?P<minute>[0-5]\d)$")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class AvailabilityInvalid(ValidationFailed):
    code = "availability_invalid"


@dataclass(frozen=True)
class Window:
    day: int
    start_minute: int
    end_minute: int


def _minutes(text: object, *, field: str) -> int:
    match = TIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise AvailabilityInvalid(f"{field} must be a time HH:MM from 00:00 to 24:00, got {text!r}.")
    minutes = int(match["hour"]) * 60 + int(match["minute"])
    if minutes > 24 * 60:
        raise AvailabilityInvalid(f"{field} must not be later than 24:00, got {text!r}.")
    return minutes


def parse_windows(windows: object) -> list[Window]:
    """Return validated weekly windows; refuse empty, overlapping or malformed ones, naming the window."""
    if not isinstance(windows, list):
        raise AvailabilityInvalid("windows must be a list of {day, start, end} objects.")
    if len(windows) > MAX_WINDOWS:
        raise AvailabilityInvalid(f"At most {MAX_WINDOWS} windows are allowed, got {len(windows)}.")
    parsed = []
    for number, window in enumerate(windows):
        field = f"windows[{number}]"
        if not isinstance(window, dict) or set(window) != {"day", "start", "end"}:
            raise AvailabilityInvalid(f"{field} must be an object with exactly day, start and end.")
        day = window["day"]
        if isinstance(day, str) and day.lower() in DAYS:
            day = DAYS.index(day.lower())
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            raise AvailabilityInvalid(f"{field}.day must be 0 (Monday) to 6 (Sunday) or a day's name, got {day!r}.")
        start = _minutes(window["start"], field=f"{field}.start")
        end = _minutes(window["end"], field=f"{field}.end")
        if end <= start:
            raise AvailabilityInvalid(
                f"{field} is empty or crosses midnight ({window['start']}-{window['end']}): end must be after start; "
                "split a window over midnight into two days."
            )
        parsed.append(Window(day, start, end))
    parsed.sort(key=lambda w: (w.day, w.start_minute))
    for before, after in itertools.pairwise(parsed):
        if before.day == after.day and after.start_minute < before.end_minute:
            raise AvailabilityInvalid(f"Two windows on {DAYS[before.day]} overlap; merge them into one.")
    return parsed


def parse_time_zone(name: object) -> ZoneInfo:
    """Return the IANA time zone called `name`, or refuse it."""
    if not isinstance(name, str) or len(name) > 64 or name not in _zones():
        raise AvailabilityInvalid(f"Unknown time zone {name!r}; use an IANA name such as 'Europe/Madrid' or 'UTC'.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise AvailabilityInvalid(f"Unknown time zone {name!r}.") from None


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones())
        _ZONES.add("UTC")
    return _ZONES


def in_window(windows: list[Window], zone: ZoneInfo, now: datetime) -> bool:
    """Return whether `now` falls in one of the weekly windows, read in the node's time zone."""
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    return any(w.day == local.weekday() and w.start_minute <= minute < w.end_minute for w in windows)


def policy_in_market(policy: NodeAvailability | None, now: datetime) -> bool:
    """Return whether a node with this policy may sell its vGPUs at `now` (no policy: always)."""
    if policy is None or policy.mode == AvailabilityMode.ALWAYS:
        return True
    if policy.mode == AvailabilityMode.WHEN_IDLE:
        return not policy.owner_active
    return not policy.owner_active and in_window(parse_windows(policy.windows), ZoneInfo(policy.time_zone), now)


def is_interruptible(policy: NodeAvailability | None) -> bool:
    """Return whether the policy can take capacity back (its asks are interruptible)."""
    return policy is not None and policy.mode in INTERRUPTIBLE_MODES


def nodes_out_of_market(*, node_ids: list[int], now: datetime | None = None) -> set[int]:
    """Return the nodes among `node_ids` whose policy keeps them out of the market at `now`."""
    now = now or timezone.now()
    policies = NodeAvailability.objects.filter(node_id__in=node_ids).exclude(
        mode=AvailabilityMode.ALWAYS, owner_active=False
    )
    return {policy.node_id for policy in policies if not policy_in_market(policy, now)}


def interruptible_nodes(*, node_ids: list[int]) -> set[int]:
    """Return the nodes among `node_ids` whose capacity is interruptible."""
    return set(
        NodeAvailability.objects.filter(node_id__in=node_ids, mode__in=list(INTERRUPTIBLE_MODES)).values_list(
            "node_id", flat=True
        )
    )


# -- the provider's policy ------------------------------------------------------------------------------------


def colocation_message(policy: NodeAvailability | None) -> dict:
    """Return the Colocation control message that tells the agent how to watch for its owner."""
    if policy is None:
        return {"colocation": {"watch_owner": False}}
    return {
        "colocation": {
            "watch_owner": policy.mode == AvailabilityMode.WHEN_IDLE,
            "utilization_threshold_percent": policy.utilization_threshold_percent,
            "memory_threshold_percent": policy.memory_threshold_percent,
            "grace_seconds": policy.grace_seconds,
            "owner_time": _schedule_owner_time(policy, timezone.now()),
        }
    }


def _schedule_owner_time(policy: NodeAvailability, now: datetime) -> bool:
    """Return whether a schedule gives the node's GPUs to its owner at `now` (outside every window)."""
    if policy.mode != AvailabilityMode.SCHEDULE:
        return False
    return not in_window(parse_windows(policy.windows), ZoneInfo(policy.time_zone), now)


def availability_schedules_push(*, now: datetime | None = None) -> list[int]:
    """Tell the agents of scheduled nodes whose window just opened or closed; return their ids.

    Run every NODE_AVAILABILITY_PUSH_SECONDS: at a window's end the node's running placements are frozen
    or stopped like for an active owner, and at a window's start they resume.
    """
    now = now or timezone.now()
    pushed = []
    with transaction.atomic():
        for policy in (
            NodeAvailability.objects.select_for_update(of=("self",))
            .filter(
                mode=AvailabilityMode.SCHEDULE,
                node__state__in=[NodeState.ONLINE, NodeState.DRAINING],
                node__deleted_at__isnull=True,
            )
            .order_by("pk")
        ):
            owner_time = _schedule_owner_time(policy, now)
            if owner_time == policy.schedule_owner_time:
                continue
            policy.schedule_owner_time = owner_time
            policy.save(update_fields=["schedule_owner_time", "updated_at"])
            NodeCommand.objects.create(node_id=policy.node_id, message=colocation_message(policy))
            pushed.append(policy.node_id)
    return pushed


def _percent(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise AvailabilityInvalid(f"{field} must be a whole percentage from 1 to 100, got {value!r}.")
    return value


def node_availability_set(
    *,
    owner,
    node_id: int,
    mode: str,
    time_zone: str = "UTC",
    windows: list | None = None,
    utilization_threshold_percent: int | None = None,
    memory_threshold_percent: int | None = None,
    grace_seconds: int | None = None,
) -> NodeAvailability:
    """Set a node's availability policy; the agent hears it at once when connected (else at its next Hello)."""
    if mode not in AvailabilityMode.values:
        raise AvailabilityInvalid(f"mode must be one of {', '.join(AvailabilityMode.values)}, got {mode!r}.")
    parse_time_zone(time_zone)
    windows = windows or []
    parsed = parse_windows(windows)
    if mode == AvailabilityMode.SCHEDULE and not parsed:
        raise AvailabilityInvalid("A schedule needs at least one window; use mode 'always' for a node always on sale.")
    if mode != AvailabilityMode.SCHEDULE and parsed:
        raise AvailabilityInvalid(f"Windows only apply to mode 'schedule', not {mode!r}; send an empty list.")
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id, owner=owner, deleted_at__isnull=True).first()
        if node is None:
            raise NodeNotFound(f"You have no node with id {node_id}.")
        policy, _ = NodeAvailability.objects.select_for_update().get_or_create(node=node)
        policy.mode = mode
        policy.time_zone = time_zone
        policy.windows = [
            {"day": w.day, "start": f"{w.start_minute // 60:02d}:{w.start_minute % 60:02d}",
             "end": f"{w.end_minute // 60:02d}:{w.end_minute % 60:02d}"}
            for w in parsed
        ]  # fmt: skip
        if utilization_threshold_percent is not None:
            policy.utilization_threshold_percent = _percent(
                utilization_threshold_percent, "utilization_threshold_percent"
            )
        if memory_threshold_percent is not None:
            policy.memory_threshold_percent = _percent(memory_threshold_percent, "memory_threshold_percent")
        if grace_seconds is not None:
            if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int):
                raise AvailabilityInvalid("grace_seconds must be a whole number of seconds.")
            if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
                raise AvailabilityInvalid(f"grace_seconds must be from 0 to {MAX_GRACE_SECONDS}, got {grace_seconds}.")
            policy.grace_seconds = grace_seconds
        if mode != AvailabilityMode.WHEN_IDLE and policy.owner_active:
            # Only the "when idle" watch reports the owner; a policy that does not watch forgets the claim.
            _owner_set(node=node, policy=policy, active=False, at=timezone.now(), reason="the policy changed")
        policy.schedule_owner_time = _schedule_owner_time(policy, timezone.now())
        policy.save()
        if node.state in (NodeState.ONLINE, NodeState.DRAINING):
            NodeCommand.objects.create(node=node, message=colocation_message(policy))
    return policy


def availability_on_hello(*, node: Node) -> None:
    """Queue the node's policy for its agent after a Hello (inside the Hello's transaction)."""
    policy = NodeAvailability.objects.select_for_update().filter(node=node).first()
    if policy is not None:
        policy.schedule_owner_time = _schedule_owner_time(policy, timezone.now())
        policy.save(update_fields=["schedule_owner_time", "updated_at"])
        NodeCommand.objects.create(node=node, message=colocation_message(policy))


# -- the agent's claims -----------------------------------------------------------------------------------------


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(at_ms: int, now: datetime) -> datetime:
    """Return the claimed moment, clamped to [now - skew, now] (a claim never moves the past or the future)."""
    skew = timedelta(seconds=settings.AGENT_USAGE_MAX_CLOCK_SKEW_SECONDS)
    if at_ms <= 0:
        return now
    claimed = datetime.fromtimestamp(min(at_ms, 2**42) / 1000, tz=UTC)
    return min(max(claimed, now - skew), now)


def _owner_set(*, node: Node, policy: NodeAvailability, active: bool, at: datetime, reason: str) -> None:
    if active == policy.owner_active:
        if active:
            policy.owner_reason = reason
        return
    policy.owner_active = active
    policy.owner_reason = reason if active else ""
    policy.owner_active_since = at if active else None
    if active:
        OwnerPeriod.objects.create(node=node, started_at=at, reason=reason)
    else:
        OwnerPeriod.objects.filter(node=node, ended_at__isnull=True).update(ended_at=at)


def owner_activity_record(*, node_id: int, active: bool, at_ms: int, reason: str) -> bool:
    """Store an agent's claim that its owner came or left; return whether the node's market state changed.

    On a dedicated node (`always`) the owner has no right to the GPU: the claim is kept as a flag for
    operators and reputation, and the node leaves the market like any other while the owner is active.
    """
    check_int(at_ms, field="at_ms", low=0)
    reason = check_text(reason, field="reason", max_length=300)
    now = timezone.now()
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node_id)
        policy, _ = NodeAvailability.objects.select_for_update().get_or_create(node=node)
        before = policy.owner_active
        _owner_set(node=node, policy=policy, active=active, at=_moment(at_ms, now), reason=reason)
        policy.save(update_fields=["owner_active", "owner_reason", "owner_active_since", "updated_at"])
        if active and not before and policy.mode == AvailabilityMode.ALWAYS:
            NodeFlag.objects.create(
                node=node, code="dedicated_owner_use", detail=f"The owner used a dedicated node's GPU: {reason}"[:500]
            )
    if before != active:
        log.info("node %s: owner %s (%s)", node_id, "active" if active else "gone", reason)
    return before != active


def placement_pause_track(*, placement: NodePlacement, before: str, after: str, at_ms: int, message: str) -> None:
    """Open or close a placement's pause from its status change (inside placement_status_record's transaction)."""
    if before == after:
        return
    now = timezone.now()
    if after == "paused":
        # Never before usage already stored (it was charged), never in the future.
        charged_until = UsageReport.objects.filter(placement=placement).aggregate(end=Max("interval_end_ms"))["end"]
        at = max(_ms(_moment(at_ms, now)), charged_until or 0)
        pause = PlacementPause.objects.create(placement=placement, paused_at_ms=at, reason=message[:300])
        _interrupted(placement=placement, how="paused", key=f"pause:{pause.pk}", message=message)
        return
    if after == "lost" and before != "paused" and _owner_has_gpu(placement.node_id, message):
        # A frozen placement's interruption was its pause; a running one stopped for the owner is one now.
        _interrupted(placement=placement, how="lost", key="lost", message=message)
    if before == "paused":
        pause = (
            PlacementPause.objects.select_for_update().filter(placement=placement, resumed_at_ms__isnull=True).first()
        )
        if pause is not None:
            pause.resumed_at_ms = max(_ms(_moment(at_ms, now)), pause.paused_at_ms)
            pause.ended_by = "resumed" if after == "running" else after
            pause.save(update_fields=["resumed_at_ms", "ended_by"])


OWNER_MESSAGE_MARK = "owner is using the GPU"  # agent.session's OWNER_STOP_MESSAGE / OWNER_PAUSE_MESSAGE


def _owner_has_gpu(node_id: int, message: str) -> bool:
    """Return whether a placement lost now was lost to the node's owner (claimed, scheduled, or said so)."""
    policy = NodeAvailability.objects.filter(node_id=node_id).first()
    return OWNER_MESSAGE_MARK in message or (policy is not None and (policy.owner_active or policy.schedule_owner_time))


def _interrupted(*, placement: NodePlacement, how: str, key: str, message: str) -> None:
    """Tell the layers above, after commit, that the owner interrupted a placement (reputation, refunds)."""
    mode = NodeAvailability.objects.filter(node_id=placement.node_id).values_list("mode", flat=True).first()
    dedicated = mode in (None, AvailabilityMode.ALWAYS)
    node_id, placement_id = placement.node_id, placement.placement_id
    transaction.on_commit(
        lambda: placement_interrupted.send(
            sender=NodePlacement,
            node_id=node_id,
            placement_id=placement_id,
            dedicated=dedicated,
            how=how,
            key=key,
            message=message[:300],
        )
    )


def placement_pause_reattach(*, placement: NodePlacement, state: str, paused_at_ms: int) -> None:
    """Record a pause an agent reports in its Hello (it paused while it could not reach the gateway)."""
    placement_pause_track(
        placement=placement,
        before=placement.state,
        after=state,
        at_ms=paused_at_ms if state == "paused" else 0,
        message="paused while the agent was disconnected: the node's owner is using the GPU",
    )


def usage_overlaps_pause(*, placement: NodePlacement, start_ms: int, end_ms: int) -> bool:
    """Return whether a usage interval overlaps a recorded pause of the placement (open pauses reach to now)."""
    for paused_at, resumed_at in PlacementPause.objects.filter(placement=placement).values_list(
        "paused_at_ms", "resumed_at_ms"
    ):
        if start_ms < (resumed_at if resumed_at is not None else 2**62) and end_ms > paused_at:
            return True
    return False


def paused_ms(*, node_placement_ids: list[int], now: datetime | None = None) -> dict[int, int]:
    """Return how long each placement has been paused in all (open pauses count up to now)."""
    now_ms = _ms(now or timezone.now())
    totals: dict[int, int] = {}
    for placement_id, paused_at, resumed_at in PlacementPause.objects.filter(
        placement_id__in=node_placement_ids
    ).values_list("placement_id", "paused_at_ms", "resumed_at_ms"):
        end = resumed_at if resumed_at is not None else now_ms
        totals[placement_id] = totals.get(placement_id, 0) + max(end - paused_at, 0)
    return totals


def open_pause_started(*, node_placement_ids: list[int]) -> dict[int, int]:
    """Return when each currently paused placement was paused (ms)."""
    return dict(
        PlacementPause.objects.filter(placement_id__in=node_placement_ids, resumed_at_ms__isnull=True).values_list(
            "placement_id", "paused_at_ms"
        )
    )


def pause_log(*, node_placement_ids: list[int]) -> list[dict]:
    """Return the pauses of placements, oldest first, for the buyer's pause log."""
    return [
        {
            "placement": placement_id,
            "paused_at": datetime.fromtimestamp(paused_at / 1000, tz=UTC),
            "resumed_at": datetime.fromtimestamp(resumed_at / 1000, tz=UTC) if resumed_at is not None else None,
            "reason": reason,
            "ended_by": ended_by,
        }
        for placement_id, paused_at, resumed_at, reason, ended_by in PlacementPause.objects.filter(
            placement_id__in=node_placement_ids
        )
        .order_by("paused_at_ms", "pk")
        .values_list("placement__placement_id", "paused_at_ms", "resumed_at_ms", "reason", "ended_by")
    ]


# -- reliability ------------------------------------------------------------------------------------------------

RELIABILITY_DAYS = 7
SAMPLE_SECONDS = 60


@dataclass(frozen=True)
class Reliability:
    """How well a node kept its policy's promise over the last RELIABILITY_DAYS days."""

    scheduled_hours: float
    delivered_share: float | None  # delivered / scheduled availability, None when nothing was scheduled
    rental_hours: float
    interruptions: int
    interruptions_per_100_rental_hours: float | None


def _spans(rows, now: datetime) -> list[tuple[datetime, datetime]]:
    return [(start, end or now) for start, end in rows]


def _covered(moment: datetime, spans: list[tuple[datetime, datetime]]) -> bool:
    return any(start <= moment < end for start, end in spans)


def node_reliability(*, node_id: int, now: datetime | None = None) -> Reliability:
    """Return the share of scheduled availability a node delivered and its interruptions per 100 rental-hours.

    Scheduled: every minute its policy promised (always: all; schedule: inside its windows; when idle: every
    minute the owner was not active, since the owner's own use is allowed). Delivered: scheduled minutes in
    which the node was neither offline nor (on an always or scheduled node) taken by its owner. Interruptions:
    placements frozen or lost on it; rental-hours: the run time its usage reports cover. Sampled per minute.
    """
    now = now or timezone.now()
    since = now - timedelta(days=RELIABILITY_DAYS)
    policy = NodeAvailability.objects.filter(node_id=node_id).first()
    owner = _spans(
        OwnerPeriod.objects.filter(node_id=node_id).exclude(ended_at__lt=since).values_list("started_at", "ended_at"),
        now,
    )
    offline = _offline_spans(node_id=node_id, since=since, now=now)
    enrolled = Node.objects.filter(pk=node_id).values_list("enrolled_at", flat=True).first() or now
    windows = parse_windows(policy.windows) if policy and policy.mode == AvailabilityMode.SCHEDULE else []
    zone = ZoneInfo(policy.time_zone) if policy else ZoneInfo("UTC")
    scheduled = delivered = 0
    moment = max(since, enrolled)
    while moment < now:
        if policy is None or policy.mode == AvailabilityMode.ALWAYS:
            promised, owner_excused = True, False
        elif policy.mode == AvailabilityMode.SCHEDULE:
            promised, owner_excused = in_window(windows, zone, moment), False
        else:
            promised, owner_excused = not _covered(moment, owner), True
        if promised:
            scheduled += 1
            if not _covered(moment, offline) and (owner_excused or not _covered(moment, owner)):
                delivered += 1
        moment += timedelta(seconds=SAMPLE_SECONDS)
    since_ms = _ms(since)
    run_ms = sum(
        end - start
        for start, end in UsageReport.objects.filter(
            placement__node_id=node_id, interval_end_ms__gt=since_ms
        ).values_list("interval_start_ms", "interval_end_ms")
    )
    interruptions = (
        PlacementPause.objects.filter(placement__node_id=node_id, paused_at_ms__gte=since_ms).count()
        + NodePlacement.objects.filter(node_id=node_id, state="lost", stopped_at__gte=since).count()
    )
    rental_hours = run_ms / 3_600_000
    return Reliability(
        scheduled_hours=round(scheduled * SAMPLE_SECONDS / 3600, 2),
        delivered_share=round(delivered / scheduled, 4) if scheduled else None,
        rental_hours=round(rental_hours, 3),
        interruptions=interruptions,
        interruptions_per_100_rental_hours=round(interruptions * 100 / rental_hours, 2) if rental_hours else None,
    )


def _offline_spans(*, node_id: int, since: datetime, now: datetime) -> list[tuple[datetime, datetime]]:
    """Return the spans the platform held the node offline or quarantined since `since`."""
    spans, start = [], None
    for to_state, at in (
        NodeEvent.objects.filter(node_id=node_id, at__gte=since).order_by("at", "pk").values_list("to_state", "at")
    ):
        if to_state in (NodeState.OFFLINE, NodeState.QUARANTINED):
            start = start or at
        elif start is not None:
            spans.append((start, at))
            start = None
    if start is not None:
        spans.append((start, now))
    return spans
