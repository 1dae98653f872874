"""How much each kind of evidence counts, in units of good or bad evidence (docs/reputation.md's table)."""

from reputation.beta import MICRO
from reputation.models import EvidenceKind

# (positive, negative) units per event; uptime is scaled by the day's fraction online / offline.
WEIGHTS: dict[str, tuple[float, float]] = {
    EvidenceKind.UPTIME: (1, 1),
    EvidenceKind.PLACEMENT_COMPLETED: (1, 0),
    # The workload's own failure (a bad image, a crash) is not the provider's fault: recorded, weighs nothing.
    EvidenceKind.PLACEMENT_FAILED: (0, 0),
    EvidenceKind.PLACEMENT_LOST: (0, 3),
    EvidenceKind.CHALLENGE_PASSED: (1, 0),
    EvidenceKind.CHALLENGE_FAILED: (0, 5),
    EvidenceKind.DISPUTE_UPHELD: (0, 5),
    EvidenceKind.DISPUTE_REJECTED: (0, 1),
    EvidenceKind.SYBIL_GPU_UUID: (0, 20),
    EvidenceKind.TELEMETRY_CONTRADICTION: (0, 5),
    EvidenceKind.MANY_BUYERS_FAILED: (0, 5),
    # Per interruption of a rental's placement by the node's owner (docs/colocation.md): interruptible capacity
    # is sold as takeable, so it weighs little; a dedicated node's owner broke the promise (and owes a refund).
    EvidenceKind.OWNER_INTERRUPTION: (0, 0.25),
    EvidenceKind.DEDICATED_OWNER_USE: (0, 5),
    # The record of an operator's slash: the dispute it follows already weighed against the provider's nodes.
    EvidenceKind.STAKE_SLASHED: (0, 0),
}

# Usage refusals by the gateway's code: a count above the allocation is a lie; an interval while the platform
# held the node offline may be an honest agent whose heartbeats were lost.
USAGE_REFUSAL_WEIGHTS: dict[str, float] = {
    "usage_report_too_many_vgpus": 5,
    "usage_report_in_future": 2,
    "usage_report_outside_placement": 1,
    "usage_report_while_offline": 0.25,
}

# NodeFlag codes the gateway writes that are evidence here, by evidence kind.
FLAG_KINDS: dict[str, str] = {
    "gpu_uuid_claimed": EvidenceKind.SYBIL_GPU_UUID,
    **{code: EvidenceKind.USAGE_REFUSED for code in USAGE_REFUSAL_WEIGHTS},
}


def micro(units: float) -> int:
    """Return units of evidence as integer micro-units."""
    return round(units * MICRO)


def amounts(kind: str, *, code: str = "", scale: float = 1) -> tuple[int, int]:
    """Return the (positive, negative) micro-units one event of `kind` weighs."""
    if kind == EvidenceKind.USAGE_REFUSED:
        return 0, micro(USAGE_REFUSAL_WEIGHTS.get(code, 1))
    positive, negative = WEIGHTS[kind]
    return micro(positive * scale), micro(negative * scale)
