"""vGPU state and the holder protocol: reserve, claim and release, owned here and nowhere else.

A reserved or busy vGPU has a holder: the won bid that reserved it (pricing, when a round clears), then
the placement that runs on it (the rentals code, when it dispatches). Other apps call these services with
a typed `Holder`; none writes `VGpu.state` or builds the stored holder string itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nodes.errors import InvalidNodeTransition
from nodes.models import VGpu, VGpuState

# Which vGPU state may follow which.
VGPU_TRANSITIONS: dict[str, set[str]] = {
    VGpuState.FREE: {VGpuState.RESERVED, VGpuState.OFFLINE},
    VGpuState.RESERVED: {VGpuState.BUSY, VGpuState.FREE, VGpuState.OFFLINE},
    VGpuState.BUSY: {VGpuState.FREE, VGpuState.OFFLINE},
    VGpuState.OFFLINE: {VGpuState.FREE},
}
_HELD = (VGpuState.RESERVED, VGpuState.BUSY)
_BID_PREFIX = "bid:"


@dataclass(frozen=True)
class Holder:
    """Who holds a reserved or busy vGPU; stored in `VGpu.holder` as `str(holder)`."""

    value: str

    @classmethod
    def bid(cls, bid_id: int) -> Holder:
        """The won bid that reserved the vGPUs, until its placement claims them."""
        return cls(f"{_BID_PREFIX}{int(bid_id)}")

    @classmethod
    def placement(cls, placement_id: str) -> Holder:
        """The placement that runs on the vGPUs."""
        if not placement_id or placement_id.startswith(_BID_PREFIX):
            raise ValueError(f"{placement_id!r} cannot name a placement holder")
        return cls(placement_id)

    def __str__(self) -> str:
        return self.value


def vgpu_transition(*, vgpus: list[VGpu], to_state: str, holder: Holder | str = "") -> None:
    """Move locked vGPUs to `to_state`, checking every transition first."""
    for vgpu in vgpus:
        if to_state not in VGPU_TRANSITIONS[vgpu.state]:
            raise InvalidNodeTransition(f"vGPU {vgpu.local_id} is {vgpu.state} and cannot become {to_state}.")
    kept = str(holder) if to_state in _HELD else ""
    VGpu.objects.filter(pk__in=[v.pk for v in vgpus]).update(state=to_state, holder=kept)
    for vgpu in vgpus:
        vgpu.state = to_state
        vgpu.holder = kept


def vgpus_reserve(*, vgpus: list[VGpu], holder: Holder) -> None:
    """Reserve free vGPUs the caller has locked for `holder` (a won bid)."""
    vgpu_transition(vgpus=vgpus, to_state=VGpuState.RESERVED, holder=holder)


def _locked(*, node_id: int, local_ids: Iterable[str], holders: Iterable[Holder], states) -> list[VGpu]:
    return list(
        VGpu.objects.select_for_update()
        .filter(
            node_id=node_id,
            local_id__in=list(local_ids),
            holder__in=[str(holder) for holder in holders],
            state__in=list(states),
        )
        .order_by("pk")
    )


def vgpus_claim(*, node_id: int, local_ids: Iterable[str], reserved_by: Holder, holder: Holder) -> int:
    """Make the vGPUs `reserved_by` still reserves busy under `holder` (its placement); return how many."""
    vgpus = _locked(node_id=node_id, local_ids=local_ids, holders=[reserved_by], states=[VGpuState.RESERVED])
    if vgpus:
        vgpu_transition(vgpus=vgpus, to_state=VGpuState.BUSY, holder=holder)
    return len(vgpus)


def vgpus_release(*, node_id: int, local_ids: Iterable[str], holders: Iterable[Holder]) -> int:
    """Free the vGPUs any of `holders` still holds (reserved or busy); return how many."""
    vgpus = _locked(node_id=node_id, local_ids=local_ids, holders=holders, states=_HELD)
    if vgpus:
        vgpu_transition(vgpus=vgpus, to_state=VGpuState.FREE)
    return len(vgpus)
