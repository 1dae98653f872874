"""Nodes API: providers manage their own nodes and never see or touch another provider's."""

from datetime import timedelta

import pytest
from django.utils import timezone

from nodes.models import Gpu, Node, NodeEvent, NodeState, Pool, VGpu, VGpuState
from nodes.services import hash_enrollment_token, node_transition

pytestmark = pytest.mark.django_db


def create(client, name="rig-1", **extra):
    return client.post("/api/v1/nodes/", {"name": name, **extra}, format="json")


def make_online(node: Node, *, vgpus: int = 2) -> Node:
    pool, _ = Pool.objects.get_or_create(name="ada-12g", defaults={"architecture": "ada", "memory_gib": 12})
    gpu = Gpu.objects.create(
        node=node,
        index=0,
        uuid=f"GPU-{node.pk}",
        name="RTX 4090",
        memory_bytes=24 * 2**30,
        compute_capability="8.9",
        architecture="ada",
        fake=True,
    )
    for i in range(vgpus):
        VGpu.objects.create(
            node=node,
            gpu=gpu,
            pool=pool,
            local_id=f"0:{i}",
            memory_bytes=12 * 2**30,
            compute_share_percent=50,
            enforcement="mps",
            fake=True,
        )
    node_transition(node=node, to_state=NodeState.ONLINE, reason="test")
    return node


def test_anonymous_caller_is_refused(anon_client):
    assert anon_client.get("/api/v1/nodes/").status_code in (401, 403)
    assert create(anon_client).status_code in (401, 403)
    assert not Node.objects.exists()


def test_create_returns_a_one_time_token_and_the_agent_command(owner_client, owner):
    response = create(owner_client, reserve_price="0.45")
    assert response.status_code == 201, response.json()
    body = response.json()
    token = body["enrollment_token"]
    assert token.startswith("jne_")
    assert f"--enroll-token {token}" in body["agent_command"]
    assert "python3 -m agent --gateway" in body["agent_command"]
    node = Node.objects.get(owner=owner)
    assert node.state == NodeState.PENDING
    assert node.enrollment_token_hash == hash_enrollment_token(token)
    assert token not in str(owner_client.get("/api/v1/nodes/").json())
    expires = node.enrollment_expires_at - timezone.now()
    assert timedelta(hours=23, minutes=59) < expires <= timedelta(hours=24)
    assert body["node"]["reserve_price"] == "0.45"


def test_owner_lists_renames_and_prices_their_node(owner_client):
    node_id = create(owner_client).json()["node"]["id"]
    response = owner_client.patch(
        f"/api/v1/nodes/{node_id}/", {"name": "rig-a", "reserve_price": "1.25", "ask_paused": True}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert (response.json()["name"], response.json()["reserve_price"], response.json()["ask_paused"]) == (
        "rig-a",
        "1.25",
        True,
    )
    assert [n["name"] for n in owner_client.get("/api/v1/nodes/").json()] == ["rig-a"]


def test_another_provider_can_neither_see_nor_touch_the_node(owner_client, other_client):
    node_id = create(owner_client).json()["node"]["id"]
    assert other_client.get("/api/v1/nodes/").json() == []
    for method, url in [
        ("get", f"/api/v1/nodes/{node_id}/"),
        ("patch", f"/api/v1/nodes/{node_id}/"),
        ("delete", f"/api/v1/nodes/{node_id}/"),
        ("post", f"/api/v1/nodes/{node_id}/drain/"),
        ("post", f"/api/v1/nodes/{node_id}/enrollment-token/"),
    ]:
        response = getattr(other_client, method)(url, {"name": "mine"}, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["code"] == "node_not_found"
    node = Node.objects.get(pk=node_id)
    assert (node.name, node.deleted_at) == ("rig-1", None)


def test_token_can_be_regenerated_until_enrolled(owner_client):
    first = create(owner_client).json()
    second = owner_client.post(f"/api/v1/nodes/{first['node']['id']}/enrollment-token/").json()
    assert second["enrollment_token"] != first["enrollment_token"]
    node = Node.objects.get()
    assert node.enrollment_token_hash == hash_enrollment_token(second["enrollment_token"])
    node.enrolled_at = timezone.now()
    node.save(update_fields=["enrolled_at"])
    response = owner_client.post(f"/api/v1/nodes/{node.pk}/enrollment-token/")
    assert response.status_code == 409
    assert "already enrolled" in response.json()["message"]


def test_drain_and_undrain_follow_the_state_machine(owner_client, owner):
    node_id = create(owner_client).json()["node"]["id"]
    response = owner_client.post(f"/api/v1/nodes/{node_id}/drain/")
    assert response.status_code == 409
    assert "Only an online node" in response.json()["message"]
    make_online(Node.objects.get(pk=node_id))
    assert owner_client.post(f"/api/v1/nodes/{node_id}/drain/").json()["state"] == "draining"
    assert owner_client.post(f"/api/v1/nodes/{node_id}/undrain/").json()["state"] == "online"
    reasons = list(NodeEvent.objects.filter(node_id=node_id).values_list("to_state", flat=True))
    assert reasons == ["online", "draining", "online"]


def test_offline_takes_the_vgpus_offline_and_online_frees_them(owner):
    from nodes.services import node_create

    node = make_online(node_create(owner=owner, name="n").node)
    assert set(node.vgpus.values_list("state", flat=True)) == {VGpuState.FREE}
    node_transition(node=node, to_state=NodeState.OFFLINE, reason="heartbeat lost")
    assert set(node.vgpus.values_list("state", flat=True)) == {VGpuState.OFFLINE}
    node_transition(node=node, to_state=NodeState.ONLINE, reason="back")
    assert set(node.vgpus.values_list("state", flat=True)) == {VGpuState.FREE}


def test_delete_refuses_a_node_that_runs_placements(owner_client):
    node_id = create(owner_client).json()["node"]["id"]
    node = make_online(Node.objects.get(pk=node_id))
    VGpu.objects.filter(node=node, local_id="0:0").update(state=VGpuState.BUSY, holder="placement-1")
    response = owner_client.delete(f"/api/v1/nodes/{node_id}/")
    assert response.status_code == 409
    assert response.json()["code"] == "node_busy"
    VGpu.objects.filter(node=node).update(state=VGpuState.FREE, holder="")
    assert owner_client.delete(f"/api/v1/nodes/{node_id}/").status_code == 204
    assert owner_client.get("/api/v1/nodes/").json() == []
    assert create(owner_client).status_code == 201  # the name is free again


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 81}, "name"),
        ({"name": "ok", "reserve_price": "-1"}, "reserve_price"),
        ({"name": "ok", "reserve_price": 0.5}, "reserve_price"),
        ({"name": "ok", "reserve_price": "0.0000001"}, "reserve_price"),
        ({"name": "ok", "reserve_price": "99999"}, "reserve_price"),
        ({"name": "ok", "reserve_price": "cheap"}, "reserve_price"),
    ],
)
def test_bad_node_input_is_400_and_creates_nothing(owner_client, body, field):
    response = owner_client.post("/api/v1/nodes/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["detail"]
    assert not Node.objects.exists()


def test_duplicate_name_is_409(owner_client):
    create(owner_client)
    response = create(owner_client)
    assert response.status_code == 409
    assert response.json()["code"] == "node_name_taken"
    assert Node.objects.count() == 1


def test_bad_update_changes_nothing(owner_client):
    node_id = create(owner_client).json()["node"]["id"]
    response = owner_client.patch(f"/api/v1/nodes/{node_id}/", {"name": "new", "reserve_price": "-3"}, format="json")
    assert response.status_code == 400
    assert Node.objects.get().name == "rig-1"
