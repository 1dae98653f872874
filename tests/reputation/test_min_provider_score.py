"""A rental's own minimum provider score: validated on the API and the form, honoured by the round."""

import uuid
from decimal import Decimal

import pytest
from django.test import Client
from rest_framework.test import APIClient

from ledger.models import Entry
from marketplace.models import Rental
from pricing.models import Bid, BidState, MarketRound
from pricing.services import InvalidBid, bid_submit
from reputation.models import EvidenceKind, SubjectKind
from reputation.selectors import score_of
from reputation.services import evidence_record
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import USDC, fund, run_round, submit


@pytest.fixture(autouse=True)
def _reference_price(settings):
    settings.PRICING_DEFAULT_ASK = "0.50"


def _good(node, n: int) -> None:
    for i in range(n):
        evidence_record(
            kind=EvidenceKind.PLACEMENT_COMPLETED, subject_kind="node", node_id=node.pk, source="t", source_key=f"g{i}"
        )


def _post(user, **fields):
    api = APIClient()
    api.force_authenticate(user)
    body = {
        "pool": "ada-12g",
        "vgpus": 1,
        "max_price_per_hour": "1",
        "max_duration_seconds": 600,
        "image": "docker.io/library/busybox:1.36",
        **fields,
    }
    return api.post("/api/v1/rentals/", body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value", [-0.1, 1.5, "1.0000001", "-0", "abc", "NaN", "Infinity", "1e999999", True, ["0.5"], {"a": 1}, "0.1234567"]
)
def test_a_min_score_outside_0_to_1_or_not_a_number_is_a_400_naming_it_and_nothing_is_stored(value):
    buyer = UserFactory()
    online_node(UserFactory(), name="rig", vgpus=1)
    fund(buyer, 10 * USDC)
    entries = Entry.objects.count()
    response = _post(buyer, min_provider_score=value)
    if value == "-0":  # minus zero is zero: accepted, and means no minimum
        assert response.status_code == 201, response.json()
        assert response.json()["min_provider_score"] is None
        return
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["detail"]["field"] == "min_provider_score" and "from 0 to 1" in body["message"]
    assert not Rental.objects.exists() and not Bid.objects.exists() and Entry.objects.count() == entries


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "stored"), [("0.6", "0.600000"), (0.75, "0.750000"), (1, "1.000000"), (None, None)])
def test_a_valid_min_score_is_stored_on_the_rental_and_its_bid(value, stored):
    buyer = UserFactory()
    online_node(UserFactory(), name="rig", vgpus=1)
    fund(buyer, 10 * USDC)
    response = _post(buyer, min_provider_score=value)
    assert response.status_code == 201, response.json()
    assert response.json()["min_provider_score"] == stored
    bid = Rental.objects.get().bid
    assert bid.min_provider_score == (Decimal(stored) if stored else None)


@pytest.mark.django_db
def test_the_bid_service_refuses_a_score_outside_0_to_1():
    for bad in (Decimal("1.1"), Decimal("-0.5"), Decimal("NaN"), Decimal("0.1234567"), 0.5):
        with pytest.raises(InvalidBid, match="from 0 to 1"):
            bid_submit(
                owner=UserFactory(), pool_name="x", units=1, max_price_per_hour=1, reference="r", min_provider_score=bad
            )


@pytest.mark.django_db
def test_the_form_shows_the_error_next_to_the_field():
    buyer = UserFactory()
    online_node(UserFactory(), name="rig", vgpus=1)
    fund(buyer, 10 * USDC)
    client = Client()
    client.force_login(buyer)
    form = {
        "form_token": str(uuid.uuid4()),
        "pool": "ada-12g",
        "vgpus": "1",
        "max_price": "1",
        "max_duration_minutes": "10",
        "image": "docker.io/library/busybox:1.36",
        "min_provider_score": "2",
    }
    response = client.post("/rentals/", form)
    assert response.status_code == 400 or response.status_code == 200
    page = response.content.decode()
    assert "min_provider_score" in page and "from 0 to 1" in page and not Rental.objects.exists()
    form.update(form_token=str(uuid.uuid4()), min_provider_score="0.4")
    client.post("/rentals/", form)
    assert Rental.objects.get().min_provider_score == Decimal("0.4")


@pytest.mark.django_db(transaction=True)
def test_the_rental_lands_only_on_nodes_at_or_above_its_minimum_or_waits(django_capture_on_commit_callbacks):
    trusted = online_node(UserFactory(), name="trusted", vgpus=1, price=500_000)
    newcomer = online_node(UserFactory(), name="newcomer", vgpus=1, price=100_000)  # cheaper, cold start 0.5
    _good(trusted, 8)
    assert score_of(kind=SubjectKind.NODE, subject_id=trusted.pk) >= Decimal("0.8")
    buyer = UserFactory()
    fund(buyer, 100 * USDC)

    picky = submit(buyer, max_price_per_hour="1", min_provider_score="0.8")
    unfillable = submit(buyer, max_price_per_hour="1", min_provider_score="0.95")
    plain = submit(buyer, max_price_per_hour="1")
    run_round(plain)
    for rental in (picky, unfillable, plain):
        rental.refresh_from_db()
    assert picky.placements.get().node == trusted  # the cheaper newcomer is below its minimum
    assert plain.placements.get().node == newcomer
    assert unfillable.bid.state == BidState.PENDING and not unfillable.placements.exists()  # waits; nothing failed
    assert unfillable.state == "pending"
    rounds = MarketRound.objects.order_by("pk")
    assert [r.parameters.get("min_provider_score") for r in rounds] == ["0.950000", "0.800000", None]
    assert [r.asks_count for r in rounds] == [0, 1, 1]  # each minimum clears against the nodes that meet it
