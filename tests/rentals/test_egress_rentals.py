"""Internet egress as a rental option (issue 15): only nodes whose agent allows it are matched, and only then
does the StartPlacement ask for a network; exposed ports never do."""

import uuid

import pytest

from marketplace.rentals.models import Rental, RentalState
from nodes.models import Node, NodeCommand
from nodes.services import node_create, node_hello
from nodes.services.reports import HelloReport
from pricing.models import Bid, BidState, MarketRound
from tests.factories import online_node
from tests.rentals.conftest import USDC, balance, fund, run_round, submit

pytestmark = pytest.mark.django_db(transaction=True)


def _start(rental: Rental) -> dict:
    placement = rental.placements.get()
    command = NodeCommand.objects.get(node_id=placement.node_id, message__start_placement__isnull=False)
    return command.message["start_placement"]


def test_an_egress_rental_waits_for_a_node_that_allows_egress(buyer, provider):
    closed = online_node(provider, name="closed", vgpus=2)
    rental = run_round(submit(buyer, internet_egress=True, ports=[8000]))
    assert rental.state == RentalState.PENDING and rental.bid.needs_egress
    assert Bid.objects.get(pk=rental.bid_id).state == BidState.PENDING
    assert MarketRound.objects.filter(egress=True).count() == 1  # cleared among no asks: nobody allows egress

    open_node = online_node(provider, name="open", vgpus=1)
    Node.objects.filter(pk=open_node.pk).update(egress_allowed=True)
    rental = run_round(rental)
    assert rental.state == RentalState.STARTING  # won and dispatched
    placement = rental.placements.get()
    assert placement.node_id == open_node.pk != closed.pk
    assert _start(rental)["network_allowed"] is True
    assert MarketRound.objects.filter(egress=True).latest("pk").asks_count == 1


def test_a_rental_without_egress_gets_no_network_even_with_ports_or_on_an_egress_node(buyer, provider):
    node = online_node(provider, name="open", vgpus=1)
    Node.objects.filter(pk=node.pk).update(egress_allowed=True)
    rental = run_round(submit(buyer, ports=[8000, 8001]))
    assert rental.state == RentalState.STARTING and not rental.bid.needs_egress
    start = _start(rental)
    assert not start.get("network_allowed") and [p["container_port"] for p in start["ports"]] == [8000, 8001]


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_internet_egress_must_be_a_boolean(owner_client, owner, node, value):
    fund(owner, 100 * USDC)
    body = {"pool": "ada-12g", "vgpus": 1, "max_price_per_hour": "2", "max_duration_seconds": 3600,
            "image": "docker.io/library/python:3.12", "internet_egress": value}  # fmt: skip
    response = owner_client.post("/api/v1/rentals/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    assert response.status_code == 400, response.json()
    assert (
        response.json()["code"] == "rental_invalid" and "internet_egress is true or false" in response.json()["message"]
    )
    assert Rental.objects.count() == 0 and Bid.objects.count() == 0 and balance(owner, "escrow") == 0


def test_the_api_takes_and_shows_internet_egress(owner_client, owner, node):
    fund(owner, 100 * USDC)
    body = {"pool": "ada-12g", "vgpus": 1, "max_price_per_hour": "2", "max_duration_seconds": 3600,
            "image": "docker.io/library/python:3.12", "internet_egress": True}  # fmt: skip
    response = owner_client.post("/api/v1/rentals/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    assert response.status_code == 201, response.json()
    assert response.json()["internet_egress"] is True
    assert Rental.objects.get().bid.needs_egress


def test_the_node_says_in_hello_whether_it_allows_egress(provider):
    node = node_create(owner=provider, name="rig").node
    for allowed in (True, False):
        hello = HelloReport("t", "podman", "h", False, [], [], [], egress_allowed=allowed)
        node_hello(node_id=node.pk, hello=hello)
        node.refresh_from_db()
        assert node.egress_allowed is allowed
