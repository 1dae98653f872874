"""Landing, market, round and statement pages: their figures and charts equal the database aggregates they show."""

import csv
import io
import json
import re
from datetime import UTC
from decimal import Decimal
from pathlib import Path

import pytest
from django.db.models import Sum

from ledger.models import Entry, Transaction
from ledger.services import ledger_deposit
from marketplace.selectors import clearing_price_chart, clearing_prices, market_nodes, network_figures, node_alias
from nodes.models import Node, NodeState, VGpu, VGpuState
from pricing.models import MarketRound
from pricing.services import bid_submit, market_round_run
from tests.factories import UserFactory, online_node

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def market(db):
    """Two providers' nodes, two rounds that traded in ada-12g and one offline node."""
    provider, other, buyer = UserFactory(), UserFactory(), UserFactory()
    cheap = online_node(provider, name="provider-secret-name", vgpus=2, price=400_000)
    dear = online_node(other, name="dear", vgpus=4, price=900_000)
    gone = online_node(other, name="gone", vgpus=1, price=100_000)
    Node.objects.filter(pk=gone.pk).update(state=NodeState.OFFLINE)
    pool_id = cheap.vgpus.first().pool_id
    bid_submit(owner=buyer, pool_name="ada-12g", units=1, max_price_per_hour=1_100_000, reference="m1")
    first = market_round_run(pool_id=pool_id)
    bid_submit(owner=buyer, pool_name="ada-12g", units=2, max_price_per_hour=2_000_000, reference="m2")
    second = market_round_run(pool_id=pool_id)
    return {"provider": provider, "buyer": buyer, "cheap": cheap, "dear": dear, "gone": gone, "rounds": [first, second]}


def test_the_price_chart_is_every_traded_rounds_payments_over_its_units(market):
    rounds = MarketRound.objects.filter(units_traded__gt=0).order_by("created_at", "pk")
    assert rounds.count() == 2
    chart = clearing_price_chart(clearing_prices())
    (dataset,) = chart["datasets"]
    assert dataset["label"] == "ada-12g"
    expected = [
        (int(r.created_at.timestamp() * 1000), Decimal(r.buyer_payments_per_hour) / 10**6 / r.units_traded)
        for r in rounds
    ]
    assert [(p["x"], Decimal(p["y"])) for p in dataset["data"]] == expected


def test_the_market_page_embeds_exactly_the_selectors_chart_and_anonymises_nodes(market, client):
    response = client.get("/market/")
    assert response.status_code == 200
    page = response.content.decode()
    script = re.search(r'<script id="price-chart-data" type="application/json">(.*?)</script>', page)
    embedded = json.loads(script.group(1))
    assert embedded == json.loads(json.dumps(clearing_price_chart(clearing_prices())))
    assert "provider-secret-name" not in page and market["provider"].email not in page
    assert node_alias(market["cheap"].pk) in page and "RTX 4090" in page
    assert 'src="/static/vendor/chart.umd.min.js"' in page


def test_network_figures_equal_the_database_counts(market, client):
    figures = network_figures()
    assert figures.nodes_online == Node.objects.filter(state=NodeState.ONLINE).count() == 2
    assert figures.vgpus_free == VGpu.objects.filter(state=VGpuState.FREE).count()
    assert figures.vgpus_busy == VGpu.objects.filter(state__in=[VGpuState.RESERVED, VGpuState.BUSY]).count() == 3
    page = client.get("/network/").content.decode()
    assert f'id="figure-nodes-online">{figures.nodes_online}<' in page
    assert f'id="figure-vgpus-busy">{figures.vgpus_busy}<' in page
    home = client.get("/").content.decode()
    assert 'hx-get="/network/"' in home and "How renting works" in home


def test_market_filters_narrow_the_nodes_and_bad_values_name_the_field(market, client):
    cheap, gone = node_alias(market["cheap"].pk), node_alias(market["gone"].pk)
    assert {n.alias for n in market_nodes(max_price=Decimal("0.5"))} == {cheap, gone}
    assert [(n.alias, n.state) for n in market_nodes(max_price=Decimal("0.2"))] == [(gone, "offline")]
    assert market_nodes(gpu_model="A100") == []
    assert [n.alias for n in market_nodes(min_reliability=1)] == []  # no finished placement yet: "new"
    for query, named in [
        ("max_price=abc", "Max ask"),
        ("max_price=NaN", "Max ask"),
        ("max_price=-1", "Max ask"),
        ("min_reliability=101", "Minimum reliability"),
        ("region=mars", "Region"),
    ]:
        response = client.get(f"/market/?{query}")
        assert response.status_code == 400, query
        assert named in response.content.decode()
    huge = client.get("/market/?pool=" + "a" * 100_000 + "&max_price=" + "9" * 5000)
    assert huge.status_code == 400 and "Max ask" in huge.content.decode()


def test_a_round_is_a_readable_page_with_anonymous_nodes(market, client):
    market_round = market["rounds"][1]
    page = client.get(f"/market/rounds/{market_round.pk}/").content.decode()
    assert f"Round {market_round.pk}" in page and market_round.digest in page
    assert node_alias(market["cheap"].pk) in page and "provider-secret-name" not in page
    assert client.get("/market/rounds/999999/").status_code == 404


@pytest.fixture
def statement_user(db):
    user = UserFactory()
    for i in range(30):
        ledger_deposit(user_id=user.pk, currency="USDC", amount=1_000_001 + i, idempotency_key=f"s{i}", memo=f"=cmd{i}")
    return user


def test_the_statement_pages_25_entries_and_the_csv_sums_to_the_balance(statement_user, client):
    client.force_login(statement_user)
    first = client.get("/statement/").content.decode()
    assert first.count('<td class="num">1.0000') == 25 and "Page 1 of 2" in first
    second = client.get("/statement/?page=2").content.decode()
    assert second.count('<td class="num">1.0000') == 5
    assert client.get("/statement/?page=999").status_code == 200  # the last page, not a 500
    response = client.get("/statement.csv")
    assert response["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == Entry.objects.filter(account__owner=statement_user).count() == 30
    total = Entry.objects.filter(account__owner=statement_user).aggregate(total=Sum("amount"))["total"]
    assert sum(Decimal(row["amount"]) for row in rows) * 10**6 == total
    assert all(row["memo"].startswith("'=") for row in rows)  # no formula reaches a spreadsheet


def test_another_users_entries_never_reach_a_statement(statement_user, client):
    other = UserFactory()
    ledger_deposit(user_id=other.pk, currency="USDC", amount=7, idempotency_key="other", memo="other's")
    client.force_login(statement_user)
    assert "other&#x27;s" not in client.get("/statement/").content.decode()
    assert b"other's" not in b"".join(client.get("/statement.csv").streaming_content)
    client.logout()
    assert client.get("/statement.csv").status_code == 302
    assert Transaction.objects.count() == 31


def test_the_vendored_scripts_are_the_pinned_npm_packages_files():
    versions = json.loads((ROOT / "static" / "vendor" / "VERSIONS.json").read_text())
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]
    assert versions["versions"] == pinned
    for package, file, name in versions["files"]:
        installed = ROOT / "node_modules" / package / file
        assert installed.exists(), f"run `make js-deps`: {installed} is missing"
        assert (ROOT / "static" / "vendor" / name).read_bytes() == installed.read_bytes(), name


def test_a_monthly_statement_holds_that_months_entries_in_html_and_csv(statement_user, client):
    from datetime import datetime

    november = Entry.objects.filter(account__owner=statement_user).order_by("pk")[:4]
    Entry.objects.filter(pk__in=[e.pk for e in november]).update(created_at=datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    Entry.objects.filter(pk=november[0].pk).update(created_at=datetime(2026, 12, 1, 0, 0, tzinfo=UTC))  # next month
    client.force_login(statement_user)
    page = client.get("/statement/?month=2026-11").content.decode()
    assert page.count('<td class="num">1.0000') == 3 and "Monthly statement for <strong>2026-11" in page
    assert 'href="/statement.csv?month=2026-11"' in page
    response = client.get("/statement.csv?month=2026-11")
    assert response["Content-Disposition"] == 'attachment; filename="janction-statement-2026-11.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["time"][:10] for row in rows] == ["2026-11-30"] * 3
    for bad in ("2026-13", "26-11", "2026-11-01", "x" * 10_000, "1999-12"):
        response = client.get(f"/statement/?month={bad}")
        assert response.status_code == 400 and "Month: give a month as YYYY-MM" in response.content.decode()
        assert client.get(f"/statement.csv?month={bad}").status_code == 400
