"""Placement ties for multi-node rentals: the buyer's region from the profiles, round trips from the overlay."""

from marketplace.models import Profile
from nodes.models import NodeOverlay
from pricing.locality import UNKNOWN_RTT_US, placement_affinity
from tests.factories import UserFactory, online_node


def test_affinity_reads_regions_from_profiles_and_round_trips_from_the_overlay(db):
    buyer, near_owner, far_owner = UserFactory(), UserFactory(), UserFactory()
    for user, region in ((buyer, "apac"), (near_owner, "apac"), (far_owner, "na")):
        Profile.objects.update_or_create(user=user, defaults={"region": region})
    near, far = online_node(near_owner, name="near"), online_node(far_owner, name="far")
    NodeOverlay.objects.create(node=near, public_key="k" * 43 + "=", address="100.64.0.9", rtt_us=1500)
    affinity = placement_affinity(bid_owners={"bid-1": buyer.pk}, nodes={"node-near": near, "node-far": far})
    assert affinity == {"bid-1": {"node-near": (0, 1500), "node-far": (1, UNKNOWN_RTT_US)}}
