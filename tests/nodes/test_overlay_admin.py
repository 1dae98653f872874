"""Operators see the overlay in the admin (who has which address, which segments are live) and cannot edit it."""

import pytest

from nodes.models import NodeOverlay, OverlayHub, OverlaySegment
from nodes.services import SegmentMember, overlay_hub_register, overlay_segment_allocate, overlay_segments_release
from nodes.services.overlay import overlay_on_hello
from tests.factories import UserFactory, online_node

KEYS = ["vGvtX+qXeV/CEHbyM3ewmHSjmPuSEiX3ROCVNhybYSY=", "pJXmdje+3l492lAm7beKd62YS9mO3YKPDmr/y1LlJT8="]
HUB_KEY = "mB4vR1kKX0e2y7cJtqf3Xo6bGzYw2a8Qp9sN5dL1hEU="


@pytest.fixture
def segment(db):
    overlay_hub_register(public_key=HUB_KEY, endpoint="hub.example:51820")
    nodes = [online_node(UserFactory(), name=f"rig-{i}") for i in range(2)]
    for node, key in zip(nodes, KEYS, strict=True):
        overlay_on_hello(node=node, public_key=key)
    overlay_segment_allocate(
        key="rental-7-1", members=[SegmentMember(node_id=n.pk, placement_id=f"p-{n.pk}") for n in nodes]
    )
    return OverlaySegment.objects.get(key="rental-7-1")


@pytest.fixture
def operator_client(db, client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_the_overlay_pages_list_hub_nodes_and_segments_with_their_members(operator_client, segment):
    hub = operator_client.get("/admin/nodes/overlayhub/").content.decode()
    assert "hub.example:51820" in hub
    nodes = operator_client.get("/admin/nodes/nodeoverlay/").content.decode()
    assert all(o.address in nodes for o in NodeOverlay.objects.all()) and "not measured" in nodes
    listing = operator_client.get("/admin/nodes/overlaysegment/?live=yes").content.decode()
    assert "rental-7-1" in listing and f">{segment.vni}<" in listing
    page = operator_client.get(f"/admin/nodes/overlaysegment/{segment.pk}/change/").content.decode()
    assert "worker-0" in page and "worker-1" in page and "10.128." in page
    overlay_segments_release(key_prefix="rental-7-")
    assert "rental-7-1" not in operator_client.get("/admin/nodes/overlaysegment/?live=yes").content.decode()
    assert "rental-7-1" in operator_client.get("/admin/nodes/overlaysegment/?live=no").content.decode()


def test_no_one_edits_who_may_reach_whom_by_hand(operator_client, segment):
    overlay = NodeOverlay.objects.first()
    hub = OverlayHub.objects.get()
    for path in (
        "/admin/nodes/overlaysegment/add/",
        "/admin/nodes/nodeoverlay/add/",
        f"/admin/nodes/overlaysegment/{segment.pk}/delete/",
        f"/admin/nodes/nodeoverlay/{overlay.pk}/delete/",
        f"/admin/nodes/overlayhub/{hub.pk}/delete/",
    ):
        assert operator_client.get(path).status_code == 403, path
    page = operator_client.get(f"/admin/nodes/nodeoverlay/{overlay.pk}/change/").content.decode()
    assert 'name="address"' not in page and 'name="public_key"' not in page
    # A POST to the change form changes nothing either.
    operator_client.post(f"/admin/nodes/nodeoverlay/{overlay.pk}/change/", {"address": "100.64.9.9"})
    overlay.refresh_from_db()
    assert overlay.address != "100.64.9.9"
