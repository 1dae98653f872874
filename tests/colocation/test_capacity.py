"""Two goods per pool: dedicated and interruptible capacity, cleared in separate rounds at their own prices."""

from __future__ import annotations

from rest_framework.test import APIClient

from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.models import RentalPlacement
from nodes.models import AvailabilityMode, NodeAvailability
from pricing.models import Capacity, MarketRound
from pricing.services import market_round_run
from tests.factories import online_node
from tests.rentals.conftest import run_round, submit


def _interruptible(node) -> None:
    NodeAvailability.objects.create(node=node, mode=AvailabilityMode.WHEN_IDLE)


def test_a_dedicated_only_rental_is_never_placed_on_interruptible_capacity(provider, buyer):
    cheap = online_node(provider, name="gamer", vgpus=2, price=100_000)
    _interruptible(cheap)
    dedicated_only = run_round(submit(buyer, vgpus=1, max_price_per_hour="5"))
    rentals_sync()
    dedicated_only.refresh_from_db()
    assert dedicated_only.state == "pending"
    assert not MarketRound.objects.filter(capacity=Capacity.DEDICATED, units_traded__gt=0).exists()
    # The interruptible sub-pool clears on its own, with the cheap node's ask.
    flexible = run_round(submit(buyer, vgpus=1, max_price_per_hour="5", accepts_interruptible=True))
    rentals_sync()
    assert RentalPlacement.objects.get(rental=flexible).node_id == cheap.pk
    interruptible_round = MarketRound.objects.get(capacity=Capacity.INTERRUPTIBLE)
    assert interruptible_round.units_traded == 1 and interruptible_round.asks_count == 1
    # A dedicated node arrives: the waiting dedicated-only rental goes there, never to the gamer's free vGPU.
    rig = online_node(provider, name="rig", vgpus=1, price=400_000)
    market_round_run(pool_id=dedicated_only.pool_id)
    rentals_sync()
    assert RentalPlacement.objects.get(rental=dedicated_only).node_id == rig.pk
    dedicated_round = MarketRound.objects.get(capacity=Capacity.DEDICATED, units_traded__gt=0)
    assert dedicated_round.asks_count == 1  # the interruptible node's free vGPU was not in its order book


def test_the_market_and_the_estimate_show_both_capacities(provider, buyer):
    _interruptible(online_node(provider, name="gamer", vgpus=2, price=100_000))
    online_node(provider, name="rig", vgpus=1, price=400_000)
    client = APIClient()
    pools = client.get("/api/v1/pools/").json()
    capacities = {c["capacity"]: c["vgpus_on_sale"] for c in pools[0]["capacities"]}
    assert capacities == {"dedicated": 1, "interruptible": 2}
    estimate = client.get(
        "/api/v1/price-estimate/", {"pool": "ada-12g", "units": 2, "max_price": "5", "capacity": "interruptible"}
    ).json()
    assert estimate["capacity"] == "interruptible" and estimate["would_win"] and estimate["free_units"] == 2
    assert estimate["other"]["capacity"] == "dedicated" and not estimate["other"]["would_win"]
    refused = client.get("/api/v1/price-estimate/", {"pool": "ada-12g", "units": 1, "max_price": "5", "capacity": "x"})
    assert refused.status_code == 400 and "capacity" in str(refused.json())
    page = client.get("/market/")
    assert page.status_code == 200 and b"interruptible" in page.content
