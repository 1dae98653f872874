"""Market API: public pools, rounds and price estimates; bad queries are 4xx."""

import pytest

from pricing.services import bid_submit, market_round_run
from tests.factories import UserFactory, online_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def market(db):
    provider, buyer = UserFactory(), UserFactory()
    node = online_node(provider, vgpus=4, price=400_000)
    bid_submit(owner=buyer, pool_name="ada-12g", units=2, max_price_per_hour=1_100_000, reference="r1")
    market_round = market_round_run(pool_id=node.vgpus.first().pool_id)
    bid_submit(owner=buyer, pool_name="ada-12g", units=1, max_price_per_hour=100_000, reference="r2")
    return market_round


@pytest.mark.parametrize("client_name", ["anon_client", "owner_client", "other_client"])
def test_pools_are_public_with_supply_demand_and_last_prices(request, market, client_name):
    pools = request.getfixturevalue(client_name).get("/api/v1/pools/").json()
    assert pools == [
        {
            "name": "ada-12g",
            "architecture": "ada",
            "memory_gib": 12,
            "vgpus_total": 4,
            "vgpus_free": 2,
            "vgpus_busy": 2,
            "demand_units": 1,
            "last_round_id": market.pk,
            "last_round_at": pools[0]["last_round_at"],
            "last_buyer_price": "1.000000",
            "last_provider_price": "1.000000",
            "reference_price": "1.000000",
            "capacities": [
                {"capacity": "dedicated", "vgpus_on_sale": 2, "demand_units": 1, "last_buyer_price": "1.000000"},
                {"capacity": "interruptible", "vgpus_on_sale": 0, "demand_units": 0, "last_buyer_price": None},
            ],
        }
    ]


def test_rounds_list_and_detail_carry_inputs_outputs_and_hash(anon_client, market):
    listed = anon_client.get("/api/v1/rounds/", {"pool": "ada-12g"}).json()
    assert [r["id"] for r in listed["results"]] == [market.pk]
    assert "inputs" not in listed["results"][0]
    assert listed["results"][0]["mechanism"] == "trade-reduction"
    assert listed["results"][0]["parameters"] == {"max_cost": "10000", "reference_price": "1"}
    detail = anon_client.get(f"/api/v1/rounds/{market.pk}/").json()
    assert detail["digest"] == market.digest
    assert detail["inputs"] == market.inputs and detail["outputs"] == market.outputs
    assert anon_client.get("/api/v1/rounds/", {"pool": "nope"}).json()["count"] == 0
    missing = anon_client.get("/api/v1/rounds/999999/")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_price_estimate_prices_a_hypothetical_rental_without_reserving(anon_client, market):
    from nodes.models import VGpu, VGpuState

    free_before = VGpu.objects.filter(state=VGpuState.FREE).count()
    body = anon_client.get("/api/v1/price-estimate/", {"pool": "ada-12g", "units": 1, "max_price": "2"}).json()
    assert body["would_win"] is True
    # One ask, partly sold, so no excluded ask sets a price: the pool's reference price 1.00 applies.
    assert body["price_per_vgpu_hour"] == "1.000000"
    assert (body["free_units"], body["waiting_units"]) == (2, 1)
    assert VGpu.objects.filter(state=VGpuState.FREE).count() == free_before
    too_cheap = anon_client.get("/api/v1/price-estimate/", {"pool": "ada-12g", "units": 1, "max_price": "0.1"}).json()
    assert too_cheap["would_win"] is False and too_cheap["payment_per_hour"] == "0"


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"pool": "nope", "units": 1, "max_price": "1"}, 404, None),
        ({"pool": "ada-12g", "units": 0, "max_price": "1"}, 400, "units"),
        ({"pool": "ada-12g", "units": 5000, "max_price": "1"}, 400, "units"),
        ({"pool": "ada-12g", "units": "two", "max_price": "1"}, 400, "units"),
        ({"pool": "ada-12g", "units": 1, "max_price": "-1"}, 400, "max_price"),
        ({"pool": "ada-12g", "units": 1, "max_price": "0.0000001"}, 400, "max_price"),
        ({"pool": "ada-12g", "units": 1}, 400, "max_price"),
    ],
)
def test_bad_estimate_queries_are_4xx(anon_client, market, params, status, field):
    response = anon_client.get("/api/v1/price-estimate/", params)
    assert response.status_code == status
    if field:
        assert field in response.json()["detail"]
    else:
        assert response.json()["code"] == "unknown_pool"
