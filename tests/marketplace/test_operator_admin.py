"""Operators in the Django admin: node actions and rental cancel through the services, recorded; read-only records."""

import pytest
from django.contrib.admin.models import LogEntry

from ledger.services import ledger_deposit
from marketplace.rentals.models import Rental, RentalState
from marketplace.rentals.services import rental_submit
from marketplace.selectors import network_figures
from nodes.models import Node, NodeState, VGpu, VGpuState
from pricing.models import Bid
from pricing.services import market_round_run
from tests.factories import PASSWORD, UserFactory, online_node

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator_client(client):
    operator = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(operator)
    client.operator = operator
    return client


def _act(client, model: str, action: str, ids: list[int]):
    return client.post(f"/admin/{model}/", {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True)


def test_quarantine_takes_a_node_off_the_market_release_brings_it_back_offline_all_recorded(operator_client):
    node = online_node(UserFactory(), name="suspect", vgpus=2, price=300_000)
    assert network_figures().vgpus_free == 2

    response = _act(operator_client, "nodes/node", "quarantine", [node.pk])
    assert "Quarantined: 1 node(s)." in response.content.decode()
    node.refresh_from_db()
    assert node.state == NodeState.QUARANTINED and "Quarantined by an operator" in node.state_reason
    assert set(VGpu.objects.filter(node=node).values_list("state", flat=True)) == {VGpuState.OFFLINE}
    assert network_figures().vgpus_free == 0
    assert operator_client.get("/market/").content.decode().count("Quarantined") == 1

    response = _act(operator_client, "nodes/node", "drain", [node.pk])  # a quarantined node cannot be drained
    assert "Only an online node can be drained" in response.content.decode()
    _act(operator_client, "nodes/node", "release", [node.pk])
    node.refresh_from_db()
    assert node.state == NodeState.OFFLINE  # online again when its agent reports
    messages = list(
        LogEntry.objects.filter(object_id=str(node.pk)).order_by("pk").values_list("change_message", flat=True)
    )
    assert messages == ["Quarantined (admin action)", "Released (admin action)"]
    assert all(e.user_id == operator_client.operator.pk for e in LogEntry.objects.all())


def test_the_state_field_cannot_be_edited_around_the_services(operator_client):
    node = online_node(UserFactory(), name="rig")
    page = operator_client.get(f"/admin/nodes/node/{node.pk}/change/").content.decode()
    assert 'name="state"' not in page
    assert "0 USDC" not in page  # amounts are decimal units, not base units
    assert ">0<" in operator_client.get("/admin/nodes/node/").content.decode()  # ask shown as "0" USDC


def test_an_operator_cancels_a_rental_with_refund_through_the_service(operator_client):
    online_node(UserFactory(), name="rig", vgpus=2, price=300_000)
    buyer = UserFactory()
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10_000_000, idempotency_key="op-fund")
    rental = rental_submit(
        owner=buyer, pool_name="ada-12g", vgpus=1, max_price_per_hour="1", max_duration_seconds=3600,
        image="docker.io/library/busybox:1.36", command=["true"],
    )  # fmt: skip
    listing = operator_client.get("/admin/marketplace/rental/").content.decode()
    assert ">1<" in listing  # held 1 USDC, in decimal units
    response = _act(operator_client, "marketplace/rental", "cancel_with_refund", [rental.pk])
    assert "Cancelled 1 rental(s)" in response.content.decode()
    rental.refresh_from_db()
    assert rental.state == RentalState.CANCELLED and rental.refunded == 1_000_000 and rental.escrow_held == 0
    assert LogEntry.objects.get(object_id=str(rental.pk)).change_message == "Cancelled with refund (admin action)"
    again = _act(operator_client, "marketplace/rental", "cancel_with_refund", [rental.pk])
    assert "already ended" in again.content.decode()
    assert Rental.objects.get(pk=rental.pk).refunded == 1_000_000


def test_rounds_and_bids_are_read_only_for_operators(operator_client):
    node = online_node(UserFactory(), name="rig", vgpus=2, price=300_000)
    buyer = UserFactory()
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10_000_000, idempotency_key="op-fund-2")
    rental_submit(
        owner=buyer, pool_name="ada-12g", vgpus=1, max_price_per_hour="1", max_duration_seconds=3600,
        image="docker.io/library/busybox:1.36", command=["true"],
    )  # fmt: skip
    market_round = market_round_run(pool_id=node.vgpus.first().pool_id)
    bid = Bid.objects.get()
    for path in (f"/admin/pricing/bid/{bid.pk}/change/", f"/admin/pricing/marketround/{market_round.pk}/change/"):
        assert operator_client.get(path).status_code == 200
        assert operator_client.post(path, {"units": 99}).status_code == 403
    assert operator_client.get("/admin/pricing/bid/add/").status_code == 403
    assert Bid.objects.get().units == 1
    assert Node.objects.get().state == NodeState.ONLINE


def test_the_admin_speaks_plain_english_about_batches(operator_client):
    index = operator_client.get("/admin/").content.decode()
    assert "Settlement batches" in index and "Settlement batchs" not in index


def test_a_suspended_user_cannot_sign_in_use_api_keys_or_rent_and_their_running_rental_goes_on(operator_client):
    from django.test import Client

    from marketplace.services import api_key_create

    online_node(UserFactory(), name="rig", vgpus=2, price=300_000)
    buyer = UserFactory()
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10_000_000, idempotency_key="op-fund-3")
    rental = rental_submit(
        owner=buyer, pool_name="ada-12g", vgpus=1, max_price_per_hour="1", max_duration_seconds=3600,
        image="docker.io/library/busybox:1.36", command=["true"],
    )  # fmt: skip
    _, raw_key = api_key_create(user=buyer, name="ci")
    session = Client()
    assert session.login(username=buyer.username, password=PASSWORD)
    assert session.get("/rentals/").status_code == 200

    response = _act(operator_client, "auth/user", "suspend", [buyer.pk, operator_client.operator.pk])
    page = response.content.decode()
    assert "Suspended: 1 user(s)." in page and "You cannot suspend yourself." in page
    buyer.refresh_from_db()
    assert (
        not buyer.is_active and operator_client.operator.__class__.objects.get(pk=operator_client.operator.pk).is_active
    )

    assert session.get("/rentals/").status_code == 302  # the open session ends at the next request
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    refused = api.post("/api/v1/rentals/", {"pool": "ada-12g"}, content_type="application/json")
    assert refused.status_code in (401, 403) and "disabled" in refused.content.decode()
    assert not Client().login(username=buyer.username, password=PASSWORD)
    assert Rental.objects.get(pk=rental.pk).state == RentalState.PENDING  # what it started goes on

    _act(operator_client, "auth/user", "unsuspend", [buyer.pk])
    buyer.refresh_from_db()
    assert buyer.is_active and api.get("/api/v1/rentals/").status_code == 200
    log = list(LogEntry.objects.filter(object_id=str(buyer.pk)).order_by("pk").values_list("change_message", flat=True))
    assert log == ["Suspended (admin action)", "Suspension lifted (admin action)"]


def test_staff_without_the_change_permission_cannot_suspend(client):
    staff = UserFactory(is_staff=True)
    target = UserFactory()
    client.force_login(staff)
    response = _act(client, "auth/user", "suspend", [target.pk])
    assert response.status_code == 403
    target.refresh_from_db()
    assert target.is_active
