"""End to end: a node created through the API, the real agent process on podman, the real gateway, mutual TLS."""

from __future__ import annotations

import itertools
import logging
from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from agent.protocol.signing import verify_usage_report
from nodes.models import Node, NodePlacement, NodeState, PlacementLogLine, UsageReport, VGpu
from nodes.services import node_send
from tests.nodes.gateway_fixtures import *  # noqa: F403
from tests.nodes.gateway_fixtures import GRACE_SECONDS, wait_until
from tests.nodes.podman_fixtures import *  # noqa: F403
from tests.nodes.podman_fixtures import podman_containers, requires_podman

USAGE_FIELDS = ("seq", "interval_start_ms", "interval_end_ms", "vgpu_count", "vgpu_milliseconds")
CONTAINER_START_SECONDS = 30
RESTART_GRACE_SECONDS = 30.0
pytestmark = [pytest.mark.slow, requires_podman]


@pytest.fixture
def provider_client(owner) -> APIClient:
    """Return an API client signed in as the provider."""
    client = APIClient()
    client.force_authenticate(owner)
    return client


def _create_node(client: APIClient, name: str) -> tuple[Node, str]:
    response = client.post("/api/v1/nodes/", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["node"]["state"] == NodeState.PENDING
    assert body["enrollment_token"] in body["agent_command"]
    return Node.objects.get(pk=body["node"]["id"]), body["enrollment_token"]


def _refreshed(row):
    row.refresh_from_db()
    return row


def _start(node: Node, placement_id: str, image: str, script: str) -> None:
    start = {"placement_id": placement_id, "image": image, "command": ["sh", "-c", script], "vgpu_local_ids": ["0:0"]}
    node_send(node_id=node.pk, message={"start_placement": start})


def _stop(node: Node, placement_id: str) -> None:
    node_send(node_id=node.pk, message={"stop_placement": {"placement_id": placement_id, "grace_seconds": 2}})


def _reports(placement: NodePlacement) -> list[UsageReport]:
    return list(UsageReport.objects.filter(placement=placement).order_by("seq"))


def _signed(report: UsageReport, **changes) -> SimpleNamespace:
    fields = {name: getattr(report, name) for name in USAGE_FIELDS}
    return SimpleNamespace(
        **{**fields, **changes}, placement_id=report.placement.placement_id, signature=bytes(report.signature)
    )


def _assert_contiguous_once(reports: list[UsageReport]) -> None:
    assert [report.seq for report in reports] == list(range(1, len(reports) + 1))
    for earlier, later in itertools.pairwise(reports):
        assert later.interval_start_ms == earlier.interval_end_ms, (earlier.seq, later.seq)
    span = reports[-1].interval_end_ms - reports[0].interval_start_ms
    assert sum(report.vgpu_milliseconds for report in reports) == span  # one vGPU: billed once, no overlap


def test_podman_agent_enrolls_runs_a_placement_reports_usage_and_goes_offline_when_killed(
    gateway, provider_client, start_podman_agent, podman_image, placement_ids
):
    node, token = _create_node(provider_client, "podman-rig")
    agent = start_podman_agent(gateway, token)

    wait_until(lambda: _refreshed(node).state == NodeState.ONLINE, what=f"node online; agent said:\n{agent.output()}")
    assert node.enrolled_at is not None and node.runtime == "podman" and node.has_fake_gpus
    detail = provider_client.get(f"/api/v1/nodes/{node.pk}/").json()
    assert detail["state"] == "online"
    assert [(v["local_id"], v["pool"], v["state"], v["fake"]) for v in detail["vgpus"]] == [
        ("0:0", "ada-12g", "free", True),
        ("0:1", "ada-12g", "free", True),
    ]

    placement_id = placement_ids("e2e")
    _start(node, placement_id, podman_image, "echo hello; echo oops >&2; sleep 600")
    placement = NodePlacement.objects.get(placement_id=placement_id)
    wait_until(
        lambda: _refreshed(placement).state == "running",
        timeout=CONTAINER_START_SECONDS,
        what=f"placement running; agent said:\n{agent.output()}",
    )
    (container,) = podman_containers(placement_id)
    assert container["State"] == "running" and container["Image"] == podman_image
    wait_until(lambda: PlacementLogLine.objects.filter(placement=placement).count() >= 2, what="both log lines")
    wait_until(lambda: UsageReport.objects.filter(placement=placement).count() >= 2, what="two usage reports")

    _stop(node, placement_id)
    wait_until(lambda: _refreshed(placement).state == "exited", timeout=20, what="placement stopped")
    assert placement.message == "stopped on request" and placement.exit_code in (137, 143)
    wait_until(lambda: not podman_containers(placement_id), what="the container removed")

    lines = list(PlacementLogLine.objects.filter(placement=placement).order_by("seq"))
    assert [line.seq for line in lines] == [1, 2]
    assert {(line.stream, line.text) for line in lines} == {("stdout", "hello"), ("stderr", "oops")}

    reports = _reports(placement)
    _assert_contiguous_once(reports)
    assert all(report.vgpu_count == 1 for report in reports)
    assert all(verify_usage_report(node.certificate_pem, _signed(report)) for report in reports)
    first = reports[0]
    forged = _signed(first, interval_end_ms=first.interval_end_ms + 1, vgpu_milliseconds=first.vgpu_milliseconds + 1)
    assert not verify_usage_report(node.certificate_pem, forged)

    agent.kill()
    wait_until(lambda: _refreshed(node).state == NodeState.OFFLINE, timeout=GRACE_SECONDS + 5, what="node offline")
    assert set(VGpu.objects.filter(node=node).values_list("state", flat=True)) == {"offline"}


def test_a_killed_agent_restarts_finds_its_container_again_and_reports_nothing_twice(
    gateway, gateway_settings, provider_client, start_podman_agent, podman_image, placement_ids, caplog
):
    # The restart is meant to fit in the heartbeat grace. With the fixture's 2 s, a loaded machine (several
    # seconds to start the agent's Python) took the node offline meanwhile, and the gateway then refused the
    # reports sent before the crash as usage_report_while_offline: another scenario, with its own tests.
    gateway_settings.NODE_HEARTBEAT_GRACE_SECONDS = RESTART_GRACE_SECONDS
    caplog.set_level(logging.WARNING, logger="nodes.gateway")
    node, token = _create_node(provider_client, "podman-restart")
    agent = start_podman_agent(gateway, token)
    wait_until(lambda: _refreshed(node).state == NodeState.ONLINE, what=f"node online; agent said:\n{agent.output()}")

    placement_id = placement_ids("restart")
    _start(node, placement_id, podman_image, "i=0; while [ $i -lt 120 ]; do i=$((i+1)); echo tick $i; sleep 0.5; done")
    placement = NodePlacement.objects.get(placement_id=placement_id)
    wait_until(lambda: UsageReport.objects.filter(placement=placement).count() >= 2, timeout=CONTAINER_START_SECONDS,
               what=f"usage before the crash; agent said:\n{agent.output()}")  # fmt: skip
    (before,) = podman_containers(placement_id)

    agent.kill()
    reported_before_restart = UsageReport.objects.filter(placement=placement).count()
    last_line_before_restart = PlacementLogLine.objects.filter(placement=placement).order_by("-seq").first().seq
    (while_down,) = podman_containers(placement_id)
    assert (while_down["Id"], while_down["State"]) == (before["Id"], "running"), "the container outlives the agent"

    agent.start()
    wait_until(lambda: "re-attaching to placement" in agent.output(), what=f"re-attach; agent said:\n{agent.output()}")
    wait_until(
        lambda: UsageReport.objects.filter(placement=placement).count() >= reported_before_restart + 2,
        what="usage after the restart",
    )
    wait_until(
        lambda: PlacementLogLine.objects.filter(placement=placement, seq__gt=last_line_before_restart + 1).exists(),
        what="log lines after the restart",
    )
    (after,) = podman_containers(placement_id)
    assert (after["Id"], after["State"]) == (before["Id"], "running")
    assert _refreshed(node).state == NodeState.ONLINE

    _stop(node, placement_id)
    wait_until(lambda: _refreshed(placement).state == "exited", timeout=20, what="placement stopped")
    wait_until(lambda: not podman_containers(placement_id), what="the container removed")

    reports = _reports(placement)
    assert len(reports) > reported_before_restart
    _assert_contiguous_once(reports)
    assert all(verify_usage_report(node.certificate_pem, _signed(report)) for report in reports)
    started_at_ms = _refreshed(placement).started_at_ms
    assert reports[0].interval_start_ms == started_at_ms
    texts = list(PlacementLogLine.objects.filter(placement=placement).order_by("seq").values_list("text", flat=True))
    assert texts[0] == "tick 1" and all(text.startswith("tick ") for text in texts)
    rejected = [record.getMessage() for record in caplog.records if "rejected" in record.getMessage()]
    assert rejected == [], "the restarted agent's resent reports and lines are accepted or acked again"


def test_a_start_beyond_the_nodes_image_disk_quota_is_lost_with_the_reason(
    gateway, provider_client, start_podman_agent, podman_image, placement_ids
):
    node, token = _create_node(provider_client, "quota-rig")
    agent = start_podman_agent(gateway, token, extra=("--image-disk-quota", "1MiB"))  # the test image is ~2 MiB
    wait_until(lambda: _refreshed(node).state == NodeState.ONLINE, what=f"node online; agent said:\n{agent.output()}")

    placement_id = placement_ids("quota")
    _start(node, placement_id, podman_image, "echo never")
    placement = NodePlacement.objects.get(placement_id=placement_id)
    wait_until(lambda: _refreshed(placement).state == "lost", what=f"placement lost; agent said:\n{agent.output()}")
    assert "image disk quota (1.0 MiB) cannot hold" in placement.message
    assert "another node" in placement.message
    assert not podman_containers(placement_id)
    assert not PlacementLogLine.objects.filter(placement=placement).exists()
