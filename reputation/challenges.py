"""Verification challenges: send a node an ordinary StartPlacement that computes a known answer, then judge it.

The workload (challenge_math.SCRIPT) runs inside the container with a fresh seed, prints the GPU it sees and the
answer; the platform reads them from the placement's own log lines (only the node that was sent the placement
may report on it) and checks the answer and, on real GPUs, the model and memory the node claimed. A wrong
answer, a mismatch, a missing answer or a timeout is a failure: evidence, and beyond
REPUTATION_CHALLENGE_FAILURES_TO_QUARANTINE failures in REPUTATION_CHALLENGE_WINDOW_DAYS the node is quarantined
(nodes.services.node_quarantine), whose placements the rentals code then interrupts and refunds.
Challenges cost the provider nothing and pay nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from janction.errors import Conflict
from nodes.models import Gpu, Node, NodeState, PlacementLogLine, VGpu, VGpuState
from nodes.services import Holder, node_quarantine, node_send, vgpus_release, vgpus_reserve
from reputation import challenge_math
from reputation.errors import SubjectNotFound
from reputation.models import Challenge, ChallengeState, EvidenceKind, SubjectKind
from reputation.services import evidence_record

logger = logging.getLogger(__name__)

ANSWER = re.compile(r"\Aanswer=(\d{1,10})\Z")
GPU = re.compile(r"\Agpu=(.{1,180})\Z")
MEMORY_TOLERANCE = 0.05


class ChallengeRefused(Conflict):
    code = "challenge_refused"


def challenge_issue(*, node_id: int) -> Challenge:
    """Reserve one free vGPU of an online node and send it a challenge placement; return the challenge."""
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(pk=node_id, deleted_at__isnull=True).first()
        if node is None:
            raise SubjectNotFound(f"Node {node_id} does not exist.")
        if node.state != NodeState.ONLINE:
            raise ChallengeRefused(f"Node {node_id} is {node.state}; challenges go to online nodes.")
        vgpu = (
            VGpu.objects.select_for_update(skip_locked=True)
            .filter(node=node, state=VGpuState.FREE)
            .order_by("pk")
            .first()
        )
        if vgpu is None:
            raise ChallengeRefused(f"Node {node_id} has no free vGPU to challenge now.")
        # Shaped like a rental's placement id (rental-<rental>-<bid>-<node>), with numbers no rental uses.
        placement_id = f"rental-{10**9 + secrets.randbelow(10**9)}-{10**9 + secrets.randbelow(10**9)}-{node.pk}"
        seed = 1 + secrets.randbelow(challenge_math.MINSTD_MODULUS - 1)
        size = settings.REPUTATION_CHALLENGE_SIZE
        vgpus_reserve(vgpus=[vgpu], holder=Holder.placement(placement_id))
        deadline = timezone.now() + timedelta(seconds=settings.REPUTATION_CHALLENGE_TIMEOUT_SECONDS)
        challenge = Challenge.objects.create(
            node=node,
            placement_id=placement_id,
            vgpu_local_id=vgpu.local_id,
            seed=seed,
            size=size,
            expected=challenge_math.answer(seed, size),
            on_cpu=node.has_fake_gpus,
            deadline=deadline,
        )
        node_send(
            node_id=node.pk,
            message={
                "start_placement": {
                    "placement_id": placement_id,
                    "image": settings.REPUTATION_CHALLENGE_IMAGE,
                    "command": challenge_math.command(seed, size),
                    "env": {},
                    "vgpu_local_ids": [vgpu.local_id],
                    "cpu_millicores": settings.RENTALS_CPU_MILLICORES_PER_VGPU,
                    "network_allowed": False,
                    "expires_at_ms": int(deadline.timestamp() * 1000),
                    "issued_for_state": "allocated",
                }
            },
        )
    return challenge


def _gpu_mismatch(challenge: Challenge, seen: str) -> str:
    """Return why the GPU seen inside the container is not what the node claimed ("" when it matches).

    Fake-GPU nodes whose container sees no GPU at all ("none": no stand-in nvidia-smi, e.g. the docker runtime)
    are not checked; when their container does see one (the agent's fake backend provides it), the same check
    as for a real GPU applies.
    """
    if challenge.on_cpu and seen.strip() == "none":
        return ""
    gpu = Gpu.objects.filter(node_id=challenge.node_id, vgpus__local_id=challenge.vgpu_local_id).first()
    if gpu is None:
        return "the challenged vGPU's GPU is gone"
    name, _, memory = seen.rpartition(",")
    try:
        memory_bytes = int(memory.strip()) * 2**20
    except ValueError:
        return f"the container saw no GPU ({seen!r})"
    if name.strip().lower() != gpu.name.strip().lower():
        return f"the container saw {name.strip()!r}, the node claims {gpu.name!r}"
    if abs(memory_bytes - gpu.memory_bytes) > MEMORY_TOLERANCE * gpu.memory_bytes:
        return f"the container saw {memory_bytes} bytes of GPU memory, the node claims {gpu.memory_bytes}"
    return ""


def challenge_judge(*, placement_id: str, state: str) -> Challenge | None:
    """Judge a challenge whose placement ended; None when the placement is not a challenge."""
    with transaction.atomic():
        challenge = Challenge.objects.select_for_update().filter(placement_id=placement_id).first()
        if challenge is None or challenge.state != ChallengeState.SENT:
            return challenge
        lines = list(
            PlacementLogLine.objects.filter(placement__placement_id=placement_id, stream="stdout")
            .order_by("seq")
            .values_list("text", flat=True)[:50]
        )
        answers = [m.group(1) for m in map(ANSWER.match, lines) if m]
        seen = next((m.group(1) for m in map(GPU.match, lines) if m), "")
        challenge.gpu_seen = seen[:200]
        if state != "exited":
            reason = f"the challenge placement ended {state}"
        elif len(answers) != 1:
            reason = "no answer" if not answers else "more than one answer"
        elif int(answers[0]) != challenge.expected:
            reason = "wrong answer"
        else:
            reason = _gpu_mismatch(challenge, seen)
        _decide(challenge, reason)
    return challenge


def _decide(challenge: Challenge, reason: str) -> None:
    challenge.state = ChallengeState.FAILED if reason else ChallengeState.PASSED
    challenge.reason = reason[:300] or ("passed on the CPU (fake GPUs)" if challenge.on_cpu else "passed")
    challenge.decided_at = timezone.now()
    challenge.save(update_fields=["state", "reason", "gpu_seen", "decided_at"])
    vgpus_release(
        node_id=challenge.node_id,
        local_ids=[challenge.vgpu_local_id],
        holders=[Holder.placement(challenge.placement_id)],
    )
    evidence_record(
        kind=EvidenceKind.CHALLENGE_FAILED if reason else EvidenceKind.CHALLENGE_PASSED,
        subject_kind=SubjectKind.NODE,
        node_id=challenge.node_id,
        source="challenge",
        source_key=f"challenge:{challenge.placement_id}",
        detail=f"{challenge.reason}{' (CPU, fake GPUs)' if challenge.on_cpu else ''}",
    )
    if reason:
        since = timezone.now() - timedelta(days=settings.REPUTATION_CHALLENGE_WINDOW_DAYS)
        failures = Challenge.objects.filter(
            node_id=challenge.node_id, state=ChallengeState.FAILED, decided_at__gte=since
        ).count()
        if failures >= settings.REPUTATION_CHALLENGE_FAILURES_TO_QUARANTINE:
            node_quarantine(node_id=challenge.node_id, reason=f"{failures} failed verification challenges")
            logger.warning("node %s quarantined after %s failed challenges", challenge.node_id, failures)


DAY_SECONDS = 86_400


def challenge_period_and_window() -> tuple[int, int]:
    """Return the seconds between one node's scheduled challenges and how long after its slot starts it is due.

    The window is two schedule ticks (so one missed tick misses nothing), never longer than the period.
    """
    rate = settings.REPUTATION_CHALLENGES_PER_NODE_PER_DAY
    period = DAY_SECONDS // rate if rate > 0 else 0
    return period, min(period, 2 * max(1, settings.REPUTATION_CHALLENGE_SCHEDULE_SECONDS))


def challenge_slot_start(*, node_id: int, now: datetime, period: int) -> datetime:
    """Return when the node's current challenge slot began: a phase per node, keyed so providers cannot compute it."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"challenge-slot:{node_id}".encode(), hashlib.sha256).digest()
    phase = int.from_bytes(digest[:8], "big") % period
    seconds = now.timestamp()
    return datetime.fromtimestamp(seconds - (seconds - phase) % period, tz=UTC)


def challenge_due(*, node_id: int, now: datetime, last_issued_at: datetime | None, period: int, window: int) -> bool:
    """Return whether the node is due a scheduled challenge: inside its slot's window and not yet challenged in it."""
    slot = challenge_slot_start(node_id=node_id, now=now, period=period)
    return (now - slot).total_seconds() < window and (last_issued_at is None or last_issued_at < slot)


def challenges_schedule(*, now: datetime | None = None) -> list[Challenge]:
    """Challenge every online node whose slot is open now and that has a free vGPU; return the challenges sent.

    Busy nodes (every vGPU reserved or in use) and nodes with a challenge still unanswered are skipped until their
    next slot. Each node is decided under its row lock (skipped when another worker holds it), and a challenge
    already sent in the node's slot is seen, so two workers running this at once send each node one challenge.
    """
    period, window = challenge_period_and_window()
    if period <= 0:
        return []
    now = now or timezone.now()
    candidates = (
        Node.objects.filter(state=NodeState.ONLINE, deleted_at__isnull=True, vgpus__state=VGpuState.FREE)
        .values_list("pk", flat=True)
        .distinct()
        .order_by("pk")
    )
    issued = []
    for node_id in list(candidates):
        if not challenge_due(node_id=node_id, now=now, last_issued_at=None, period=period, window=window):
            continue  # not its turn: decided without a lock or a query
        with transaction.atomic():
            if Node.objects.select_for_update(skip_locked=True).filter(pk=node_id).first() is None:
                continue  # another worker is deciding it
            challenges = Challenge.objects.filter(node_id=node_id)
            last = challenges.order_by("-created_at").values_list("created_at", flat=True).first()
            if challenges.filter(state=ChallengeState.SENT).exists() or not challenge_due(
                node_id=node_id, now=now, last_issued_at=last, period=period, window=window
            ):
                continue
            try:
                issued.append(challenge_issue(node_id=node_id))
            except ChallengeRefused as exc:
                logger.info("scheduled challenge of node %s skipped: %s", node_id, exc)
    return issued


def challenges_expire(*, now: datetime | None = None) -> int:
    """Fail every challenge whose node did not answer by its deadline; return how many."""
    now = now or timezone.now()
    count = 0
    for pk in Challenge.objects.filter(state=ChallengeState.SENT, deadline__lt=now).values_list("pk", flat=True):
        with transaction.atomic():
            challenge = Challenge.objects.select_for_update().get(pk=pk)
            if challenge.state == ChallengeState.SENT:
                _decide(challenge, "no answer before the deadline")
                count += 1
    return count
