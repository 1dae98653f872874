"""Provider pages: the ask form (set, change, pause), drain, the earnings chart against the ledger, payouts."""

import json
import re
from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from ledger.models import AccountKind, Entry
from ledger.services import Leg, Posting, ledger_deposit, ledger_post
from marketplace.selectors import earnings_by_day, earnings_chart
from nodes.models import Node, NodeState
from tests.factories import UserFactory, online_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def provider_client(client):
    provider = UserFactory()
    client.force_login(provider)
    client.provider = provider
    client.node = online_node(provider, name="rig", vgpus=2, price=400_000)
    return client


def test_the_ask_is_set_changed_and_paused_from_the_page(provider_client):
    node = provider_client.node
    response = provider_client.post(f"/nodes/{node.pk}/ask/", {"reserve_price": "0.75", "paused": "on"}, follow=True)
    assert "ask 0.75 USDC per vGPU-hour, paused" in response.content.decode()
    node.refresh_from_db()
    assert (node.reserve_price_per_hour, node.ask_paused) == (750_000, True)
    provider_client.post(f"/nodes/{node.pk}/ask/", {"reserve_price": "0.5"})
    node.refresh_from_db()
    assert (node.reserve_price_per_hour, node.ask_paused) == (500_000, False)


@pytest.mark.parametrize("price", ["", "abc", "-1", "0.0000001", "1e3", "99999999", "NaN", "1" * 5000])
def test_a_bad_ask_names_the_field_and_changes_nothing(provider_client, price):
    node = provider_client.node
    response = provider_client.post(f"/nodes/{node.pk}/ask/", {"reserve_price": price}, follow=True)
    assert "Ask: give USDC per vGPU-hour" in response.content.decode()
    node.refresh_from_db()
    assert node.reserve_price_per_hour == 400_000


def test_another_providers_node_cannot_be_priced_or_drained(provider_client):
    other = online_node(UserFactory(), name="theirs", price=100_000)
    for path, data in [(f"/nodes/{other.pk}/ask/", {"reserve_price": "9"}), (f"/nodes/{other.pk}/drain/", {})]:
        response = provider_client.post(path, data, follow=True)
        assert f"You have no node with id {other.pk}" in response.content.decode()
    other.refresh_from_db()
    assert (other.reserve_price_per_hour, other.state) == (100_000, NodeState.ONLINE)


def test_drain_and_back_on_sale(provider_client):
    node = provider_client.node
    provider_client.post(f"/nodes/{node.pk}/drain/")
    assert Node.objects.get(pk=node.pk).state == NodeState.DRAINING
    assert f'id="undrain-{node.pk}"' in provider_client.get("/nodes/").content.decode()
    provider_client.post(f"/nodes/{node.pk}/drain/", {"undrain": "1"})
    assert Node.objects.get(pk=node.pk).state == NodeState.ONLINE


def _earn(user, amount: int, key: str, days_ago: int = 0) -> None:
    """Credit earnings as metering does (market -> earnings), backdated by `days_ago` for the chart."""
    ledger_post(
        Posting(
            kind="charge",
            currency="USDC",
            idempotency_key=key,
            legs=(Leg(None, AccountKind.MARKET, -amount), Leg(user.pk, AccountKind.EARNINGS, amount)),
            memo="test earnings",
            metadata={},
        )
    )
    if days_ago:
        Entry.objects.filter(transaction__idempotency_key=key).update(
            created_at=timezone.now() - timedelta(days=days_ago)
        )


def test_the_earnings_chart_is_the_ledgers_daily_earnings(provider_client):
    provider = provider_client.provider
    ledger_deposit(user_id=provider.pk, currency="USDC", amount=5_000_000, idempotency_key="not-earnings")
    _earn(provider, 1_250_000, "e1", days_ago=3)
    _earn(provider, 250_001, "e2", days_ago=3)
    _earn(provider, 333_333, "e3")
    _earn(provider, 999, "e-old", days_ago=40)  # outside the 30 days
    points = earnings_by_day(user_id=provider.pk)
    assert [p.amount for p in points] == [1_500_001, 333_333]
    in_window = Entry.objects.filter(
        account__owner=provider, account__kind=AccountKind.EARNINGS, created_at__gte=timezone.now() - timedelta(days=30)
    ).aggregate(total=Sum("amount"))["total"]
    assert sum(p.amount for p in points) == in_window
    page = provider_client.get("/nodes/").content.decode()
    data = json.loads(
        re.search(r'<script id="earnings-chart-data" type="application/json">(.*?)</script>', page).group(1)
    )
    assert data == json.loads(json.dumps(earnings_chart(points)))
    assert [d["y"] for d in data["datasets"][0]["data"]] == ["1.500001", "0.333333"]
    assert '<span id="earnings-total">1.833334</span>' in page


def test_the_payouts_page_says_what_waits_for_a_batch(provider_client):
    _earn(provider_client.provider, 2_000_000, "p1")
    page = provider_client.get("/payouts/").content.decode()
    assert "No settlement batch has been posted yet" in page
    assert re.search(r"<td>USDC</td><td class=\"num\">2</td>", page)
