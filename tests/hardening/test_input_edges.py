"""Items 3, 4, 8 and 9 of the hardening issue: no 500 from a number, an offset or an amount's spelling."""

import json

import pytest

from ledger.models import Transaction
from marketplace.rentals.models import Rental
from nodes.models import Node
from tests.factories import online_node

HUGE = "1e999999"
NON_PLAIN = ["\u0661", "\uff11", "1_0", "+1", " 1 ", "1E2", HUGE, "-0", "0x10", "NaN", "Infinity", "1.", "Ⅻ"]


def _post(client, path, body, method="post"):
    return getattr(client, method)(
        path, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="hardening-key-1"
    )


@pytest.mark.parametrize("max_price", [HUGE, *NON_PLAIN])
def test_price_estimate_refuses_non_plain_amounts_anonymously(anon_client, max_price):
    response = anon_client.get("/api/v1/price-estimate/", {"pool": "ada-12g", "units": 1, "max_price": max_price})
    assert response.status_code == 400, response.content
    assert "max_price" in response.json()["detail"]


@pytest.mark.parametrize("price", [*NON_PLAIN, 1, 0, 1.5, True, None, ["1"]])
def test_node_reserve_price_follows_the_amount_rule(owner_client, price):
    response = _post(owner_client, "/api/v1/nodes/", {"name": "n1", "reserve_price": price})
    assert response.status_code == 400, response.content
    assert "reserve_price" in response.json()["detail"]
    assert not Node.objects.exists()


def test_node_reserve_price_overflow_on_patch(owner_client):
    assert _post(owner_client, "/api/v1/nodes/", {"name": "n1", "reserve_price": "0.45"}).status_code == 201
    node = Node.objects.get()
    response = _post(owner_client, f"/api/v1/nodes/{node.pk}/", {"reserve_price": HUGE}, method="patch")
    assert response.status_code == 400
    response = _post(owner_client, f"/api/v1/nodes/{node.pk}/", {"reserve_price": "1.5"}, method="patch")
    assert response.status_code == 200
    assert response.json()["reserve_price"] == "1.5"


@pytest.mark.parametrize("amount", [*NON_PLAIN, 1, 100, 1.0])
def test_faucet_follows_the_amount_rule(owner_client, embedded, amount):
    response = _post(owner_client, "/api/v1/ledger/faucet/", {"currency": "USDC", "amount": amount})
    assert response.status_code == 400, response.content
    assert "amount" in response.json()["detail"]
    assert not Transaction.objects.exists()


@pytest.mark.parametrize("price", [*NON_PLAIN, 1, 1_000_000, 0.5])
def test_rental_price_follows_the_amount_rule_and_never_leaks_internals(owner, owner_client, price):
    online_node(owner, name="rig", vgpus=2, price=500_000)
    body = {"pool": "ada-12g", "vgpus": 1, "max_price_per_hour": price, "max_duration_seconds": 60, "image": "busybox"}
    response = _post(owner_client, "/api/v1/rentals/", body)
    assert response.status_code == 400, response.content
    assert response.json()["detail"] == {"field": "max_price_per_hour"}
    text = response.content.decode()
    assert "class" not in text and "decimal." not in text
    assert not Rental.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/rounds/?since=2020-01-01T00:00:00%2B16:00",
        "/api/v1/rounds/?since=2020-01-01T00:00:00-23:59",
        "/api/v1/rentals/?since=2020-01-01T00:00:00%2B23:59&until=2030-01-01T00:00:00-20:00",
        "/api/v1/ledger/entries/?since=2020-01-01T00:00:00%2B16:00&until=2020-01-02T00:00:00-16:00",
    ],
)
def test_offsets_beyond_postgresql_range_are_read_as_utc(owner_client, path):
    response = owner_client.get(path)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/rounds/?since=0001-01-01T00:00:00%2B16:00",
        "/api/v1/rentals/?until=9999-12-31T23:59:59-16:00",
        "/api/v1/ledger/entries/?since=yesterday",
    ],
)
def test_out_of_range_date_times_are_a_400(owner_client, path):
    response = owner_client.get(path)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
