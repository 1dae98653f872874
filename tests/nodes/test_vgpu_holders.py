"""nodes owns vGPU state: the holder protocol (reserve, claim, release) and its typed holder (issue 10, item 3)."""

import pytest

from nodes.errors import InvalidNodeTransition
from nodes.models import VGpu, VGpuState
from nodes.services import Holder, vgpus_claim, vgpus_release, vgpus_reserve
from tests.factories import UserFactory, online_node

pytestmark = pytest.mark.django_db


def _vgpus(node) -> list[VGpu]:
    return list(VGpu.objects.select_for_update().filter(node=node).order_by("local_id"))


def _held(node) -> list[tuple[str, str, str]]:
    return list(VGpu.objects.filter(node=node).order_by("local_id").values_list("local_id", "state", "holder"))


def test_a_bid_reserves_its_placement_claims_and_release_frees():
    node = online_node(UserFactory(), vgpus=2)
    vgpus_reserve(vgpus=_vgpus(node), holder=Holder.bid(7))
    assert _held(node) == [("0:0", VGpuState.RESERVED, "bid:7"), ("0:1", VGpuState.RESERVED, "bid:7")]

    claimed = vgpus_claim(node_id=node.pk, local_ids=["0:0"], reserved_by=Holder.bid(7), holder=Holder.placement("p-1"))
    assert claimed == 1
    assert _held(node) == [("0:0", VGpuState.BUSY, "p-1"), ("0:1", VGpuState.RESERVED, "bid:7")]

    freed = vgpus_release(node_id=node.pk, local_ids=["0:0", "0:1"], holders=[Holder.placement("p-1"), Holder.bid(7)])
    assert freed == 2
    assert _held(node) == [("0:0", VGpuState.FREE, ""), ("0:1", VGpuState.FREE, "")]


def test_another_bid_or_placement_can_neither_claim_nor_release_what_it_does_not_hold():
    node = online_node(UserFactory(), vgpus=1)
    vgpus_reserve(vgpus=_vgpus(node), holder=Holder.bid(7))
    assert vgpus_claim(node_id=node.pk, local_ids=["0:0"], reserved_by=Holder.bid(8), holder=Holder.placement("x")) == 0
    assert vgpus_release(node_id=node.pk, local_ids=["0:0"], holders=[Holder.bid(8), Holder.placement("x")]) == 0
    assert _held(node) == [("0:0", VGpuState.RESERVED, "bid:7")]


def test_a_reserved_vgpu_cannot_be_reserved_again():
    node = online_node(UserFactory(), vgpus=1)
    vgpus_reserve(vgpus=_vgpus(node), holder=Holder.bid(7))
    with pytest.raises(InvalidNodeTransition, match="is reserved and cannot become reserved"):
        vgpus_reserve(vgpus=_vgpus(node), holder=Holder.bid(8))
    assert _held(node) == [("0:0", VGpuState.RESERVED, "bid:7")]


@pytest.mark.parametrize("placement_id", ["", "bid:7"])
def test_a_placement_id_that_would_pass_for_a_bid_or_nothing_is_refused(placement_id):
    with pytest.raises(ValueError, match="cannot name a placement holder"):
        Holder.placement(placement_id)


def test_the_stored_holder_strings_are_unchanged():
    assert (str(Holder.bid(12)), str(Holder.placement("rental-1-2-3"))) == ("bid:12", "rental-1-2-3")
