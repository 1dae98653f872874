"""Turn what the nodes app records into evidence: uptime per node per day, placement ends, flags, telemetry.

Every entry point is idempotent (evidence is keyed by its source), so the signal receivers and the periodic
collector may both see an event: whichever runs first stores it, the other stores nothing.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import F
from django.utils import timezone

from nodes.availability import OWNER_MESSAGE_MARK
from nodes.models import (
    AvailabilityMode,
    Gpu,
    Node,
    NodeAvailability,
    NodeEvent,
    NodeFlag,
    NodePlacement,
    NodeState,
    PlacementPause,
)
from pricing.models import Bid
from reputation.challenges import challenge_judge
from reputation.models import Challenge, Evidence, EvidenceKind, SubjectKind
from reputation.services import evidence_record
from reputation.weights import FLAG_KINDS, amounts

logger = logging.getLogger(__name__)

RENTAL_PLACEMENT = re.compile(r"\Arental-(\d+)-(\d+)-(\d+)\Z")
UP_STATES = frozenset({NodeState.ONLINE, NodeState.DRAINING})
# A node whose placements were lost for at least this many different buyers in a day is flagged for operators.
MANY_BUYERS = 3


def buyer_of(placement_id: str) -> int | None:
    """Return the buyer of a rental's placement (placement ids are "rental-<rental>-<bid>-<node>"), or None."""
    match = RENTAL_PLACEMENT.match(placement_id)
    if match is None:
        return None
    return Bid.objects.filter(pk=int(match.group(2))).values_list("owner_id", flat=True).first()


def placement_evidence(*, node_id: int, placement_id: str, state: str, message: str = "") -> Evidence | None:
    """Record how a placement ended: exited counts for the node, lost against it, failed (the workload's) not."""
    kind = {
        "exited": EvidenceKind.PLACEMENT_COMPLETED,
        "failed": EvidenceKind.PLACEMENT_FAILED,
        "lost": EvidenceKind.PLACEMENT_LOST,
    }.get(state)
    if kind is None or not Node.objects.filter(pk=node_id).exists():
        return None
    if Challenge.objects.filter(placement_id=placement_id).exists():
        challenge_judge(placement_id=placement_id, state=state)  # a challenge is judged by its answer
        return None
    buyer = buyer_of(placement_id)
    evidence = evidence_record(
        kind=kind,
        subject_kind=SubjectKind.NODE,
        node_id=node_id,
        source="placement",
        source_key=f"placement:{placement_id}",
        detail=f"{placement_id} {state}: {message}"[:300],
        counterparty_id=buyer,
    )
    if evidence is not None and kind == EvidenceKind.PLACEMENT_LOST:
        _many_buyers_check(node_id=node_id, day=evidence.day)
    return evidence


def interruption_evidence(
    *, node_id: int, placement_id: str, dedicated: bool, how: str, key: str, message: str = ""
) -> Evidence | None:
    """Record that the node's owner took the GPU from a placement (once per interruption, keyed by it).

    Interruptible capacity (schedule, when idle) weighs little: buyers accepted it. A dedicated node weighs
    as much as an upheld dispute. Against the buyer's own node it counts for nothing (self-dealing).
    """
    if not Node.objects.filter(pk=node_id).exists():
        return None
    kind = EvidenceKind.DEDICATED_OWNER_USE if dedicated else EvidenceKind.OWNER_INTERRUPTION
    return evidence_record(
        kind=kind,
        subject_kind=SubjectKind.NODE,
        node_id=node_id,
        source="colocation",
        source_key=f"interruption:{placement_id}:{key}"[:160],
        detail=f"{placement_id} {how} by the node's owner: {message}"[:300],
        counterparty_id=buyer_of(placement_id),
        alert=f"Node {node_id}: its owner took a dedicated GPU from {placement_id}."[:500] if dedicated else "",
    )


def _many_buyers_check(*, node_id: int, day: date) -> None:
    keys = Evidence.objects.filter(
        node_id=node_id, day=day, kind=EvidenceKind.PLACEMENT_LOST, self_dealing=False
    ).values_list("source_key", flat=True)
    buyers = {buyer_of(key.removeprefix("placement:")) for key in keys} - {None}
    if len(buyers) >= MANY_BUYERS:
        evidence_record(
            kind=EvidenceKind.MANY_BUYERS_FAILED,
            subject_kind=SubjectKind.NODE,
            node_id=node_id,
            source="collector",
            source_key=f"many-buyers:{node_id}:{day.isoformat()}",
            detail=f"placements lost for {len(buyers)} buyers on {day}",
            alert=f"Node {node_id} lost placements of {len(buyers)} different buyers on {day}.",
        )


def flag_evidence(*, node_id: int, flag_id: int, code: str, detail: str) -> Evidence | None:
    """Turn a gateway refusal (a NodeFlag) into evidence and an operator alert; other flags are left to operators.

    Repeats of one code by one node on one day count once (an agent resends a refused report until nacked);
    every NodeFlag row stays for operators.
    """
    kind = FLAG_KINDS.get(code)
    if kind is None or not Node.objects.filter(pk=node_id).exists():
        return None
    positive, negative = amounts(kind, code=code)
    day = timezone.now().date()
    message = (
        f"Sybil: node {node_id} claimed a GPU UUID another node holds ({detail})"
        if kind == EvidenceKind.SYBIL_GPU_UUID
        else f"Node {node_id}: {code} ({detail})"
    )
    return evidence_record(
        kind=kind,
        subject_kind=SubjectKind.NODE,
        node_id=node_id,
        positive=positive,
        negative=negative,
        source="gateway",
        source_key=f"flag:{node_id}:{code}:{day.isoformat()}",
        detail=f"flag {flag_id}: {code}: {detail}"[:300],
        alert=message,
    )


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def uptime_fraction(*, node: Node, day: date) -> float | None:
    """Return the share of `day` the node was online or draining from the platform's heartbeat-driven states.

    Time before the node's enrollment does not count; None when it was not enrolled that day.
    """
    start, end = _day_bounds(day)
    enrolled = node.enrolled_at or node.created_at
    if enrolled >= end or (node.deleted_at is not None and node.deleted_at < start):
        return None
    counted_from = max(start, enrolled)
    before = NodeEvent.objects.filter(node=node, at__lt=counted_from).order_by("-at", "-pk").first()
    state = before.to_state if before else NodeState.PENDING
    events = NodeEvent.objects.filter(node=node, at__gte=counted_from, at__lt=end).order_by("at", "pk")
    up, cursor = timedelta(0), counted_from
    for event in events.values_list("to_state", "at"):
        if state in UP_STATES:
            up += event[1] - cursor
        state, cursor = event
    if state in UP_STATES:
        up += end - cursor
    total = end - counted_from
    return up / total if total else None


def uptime_evidence(*, day: date) -> int:
    """Record each node's uptime for a complete UTC day (one piece of evidence per node and day); return how many."""
    _, end = _day_bounds(day)
    recorded = 0
    nodes = Node.objects.exclude(state=NodeState.PENDING, enrolled_at__isnull=True).filter(created_at__lt=end)
    for node in nodes.iterator(chunk_size=2000):
        fraction = uptime_fraction(node=node, day=day)
        if fraction is None:
            continue
        positive = amounts(EvidenceKind.UPTIME, scale=fraction)[0]
        negative = amounts(EvidenceKind.UPTIME, scale=1 - fraction)[1]
        if evidence_record(
            kind=EvidenceKind.UPTIME,
            subject_kind=SubjectKind.NODE,
            node_id=node.pk,
            positive=positive,
            negative=negative,
            at=end,
            source="heartbeats",
            source_key=f"uptime:{node.pk}:{day.isoformat()}",
            detail=f"online {fraction:.1%} of {day} (UTC)",
        ):
            recorded += 1
    return recorded


def telemetry_evidence() -> int:
    """Record GPUs whose reported memory use exceeds the memory their Hello claimed (once per GPU and day)."""
    day = timezone.now().date()
    recorded = 0
    for gpu in Gpu.objects.filter(memory_used_bytes__gt=F("memory_bytes")).select_related("node"):
        if evidence_record(
            kind=EvidenceKind.TELEMETRY_CONTRADICTION,
            subject_kind=SubjectKind.NODE,
            node_id=gpu.node_id,
            source="telemetry",
            source_key=f"telemetry:{gpu.pk}:{day.isoformat()}",
            detail=f"GPU {gpu.uuid} reports {gpu.memory_used_bytes} bytes used of {gpu.memory_bytes} claimed",
            alert=f"Node {gpu.node_id}: GPU {gpu.uuid} reports more memory in use than it claimed to have.",
        ):
            recorded += 1
    return recorded


def missed_signals(*, since: datetime) -> int:
    """Record placement ends and flags since `since` that a lost signal (a crashed worker) never recorded."""
    count = 0
    ended = NodePlacement.objects.filter(stopped_at__gte=since, state__in=["exited", "failed", "lost"])
    for node_id, placement_id, state, message in ended.values_list("node_id", "placement_id", "state", "message"):
        count += (
            placement_evidence(node_id=node_id, placement_id=placement_id, state=state, message=message) is not None
        )
    count += _missed_interruptions(since=since)
    for flag in NodeFlag.objects.filter(at__gte=since, code__in=list(FLAG_KINDS)):
        count += flag_evidence(node_id=flag.node_id, flag_id=flag.pk, code=flag.code, detail=flag.detail) is not None
    return count


def _missed_interruptions(*, since: datetime) -> int:
    """Record owner interruptions (pauses, placements stopped for the owner) whose signal was lost."""
    since_ms = int(since.timestamp() * 1000)
    interruptions = [
        (node_id, placement_id, "paused", f"pause:{pk}", reason)
        for pk, node_id, placement_id, reason in PlacementPause.objects.filter(paused_at_ms__gte=since_ms).values_list(
            "pk", "placement__node_id", "placement__placement_id", "reason"
        )
    ]
    interruptions += [
        (node_id, placement_id, "lost", "lost", message)
        for node_id, placement_id, message in NodePlacement.objects.filter(
            stopped_at__gte=since, state="lost", message__contains=OWNER_MESSAGE_MARK
        ).values_list("node_id", "placement_id", "message")
    ]
    interruptible = set(
        NodeAvailability.objects.filter(node_id__in={row[0] for row in interruptions})
        .exclude(mode=AvailabilityMode.ALWAYS)
        .values_list("node_id", flat=True)
    )
    count = 0
    for node_id, placement_id, how, key, message in interruptions:
        count += (
            interruption_evidence(
                node_id=node_id,
                placement_id=placement_id,
                dedicated=node_id not in interruptible,
                how=how,
                key=key,
                message=message,
            )
            is not None
        )
    return count


def evidence_collect(*, now: datetime | None = None) -> dict[str, int]:
    """Run every collector: yesterday's uptime, telemetry checks, the last two days' missed signals."""
    now = now or timezone.now()
    yesterday = now.date() - timedelta(days=1)
    return {
        "uptime": uptime_evidence(day=yesterday),
        "telemetry": telemetry_evidence(),
        "missed": missed_signals(since=now - timedelta(days=2)),
    }
