"""Market rounds on the database: allocation, stored and recomputable rounds, concurrency, the API."""

import json
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.utils import timezone

from nodes.models import NodeState, VGpu, VGpuState
from nodes.services import node_transition
from pricing.models import Allocation, Bid, BidState, MarketRound
from pricing.pvcg import Ask, result_to_json
from pricing.pvcg import Bid as EngineBid
from pricing.pvcg import clear as engine_clear
from pricing.services import bid_submit, canonical_digest, market_round_run, round_recompute
from pricing.signals import bid_allocated
from tests.factories import UserFactory, online_node

USDC = 1_000_000  # base units per USDC


@pytest.fixture
def provider(db):
    return UserFactory()


@pytest.fixture
def buyer(db):
    return UserFactory()


def submit(buyer, units, price, ref, pool="ada-12g", **kw):
    return bid_submit(owner=buyer, pool_name=pool, units=units, max_price_per_hour=price, reference=ref, **kw)


@pytest.mark.django_db
def test_round_allocates_winners_to_concrete_vgpus_and_stores_everything(provider, buyer):
    cheap = online_node(provider, name="cheap", vgpus=2, price=400_000)
    dear = online_node(provider, name="dear", vgpus=4, price=900_000)
    win = submit(buyer, 2, 1_100_000, "r1")
    lose = submit(buyer, 1, 300_000, "r2")  # below every reserve price

    market_round = market_round_run(pool_id=cheap.vgpus.first().pool_id)

    win.refresh_from_db()
    lose.refresh_from_db()
    assert win.state == BidState.WON and win.round == market_round
    assert lose.state == BidState.PENDING  # waits for a later round
    # One price for everyone: min(pool reference 1.00, cheapest ask left unsold = dear at 0.90), 2 units.
    assert win.payment_per_hour == 1_800_000
    allocation = Allocation.objects.get(bid=win)
    assert allocation.node == cheap and allocation.units == 2
    reserved = list(VGpu.objects.filter(state=VGpuState.RESERVED).values_list("holder", "node_id"))
    assert reserved == [(f"bid:{win.pk}", cheap.pk)] * 2
    assert set(dear.vgpus.values_list("state", flat=True)) == {VGpuState.FREE}
    award = market_round.awards.get()
    assert (award.node, award.units_sold) == (cheap, 2)
    # What plain VCG would have paid: its cost 0.80 plus S* - S*-i = (2.20 - 0.80) - (2.20 - 1.80) = 1.00.
    assert award.vcg_payment_per_hour == 1_800_000
    assert award.payment_per_hour == 1_800_000 and award.adjustment_per_hour == 0
    assert market_round.outputs["bids"][f"bid-{win.pk}"] == {"won": True, "payment": "1.80"}
    assert (market_round.mechanism, market_round.parameters) == (
        "trade-reduction",
        {"max_cost": "10000", "reference_price": "1"},
    )
    assert market_round.digest == canonical_digest(market_round.inputs, market_round.outputs)
    assert market_round.budget_per_hour == win.payment_per_hour - award.payment_per_hour


@pytest.mark.django_db
def test_a_stored_round_recomputes_to_the_same_hash_with_the_command_line_engine(provider, buyer):
    for i in range(3):
        online_node(provider, name=f"n{i}", vgpus=4, price=300_000 + 100_000 * i)
    for i in range(6):
        submit(buyer, 1 + i % 3, 500_000 + 150_000 * i, f"r{i}")
    market_round = market_round_run(pool_id=VGpu.objects.first().pool_id)

    engine = subprocess.run(
        [sys.executable, "-m", "pricing.pvcg"],
        input=json.dumps(market_round.inputs),
        capture_output=True,
        text=True,
        check=True,
    )
    recomputed = json.loads(engine.stdout)
    assert canonical_digest(market_round.inputs, recomputed) == market_round.digest
    assert market_round.units_traded > 0


@pytest.mark.django_db
def test_rounds_stored_before_the_mechanism_was_recorded_recompute_with_plain_vcg(provider):
    from nodes.models import Pool

    pool = online_node(provider, vgpus=1).vgpus.first().pool
    # Exactly what the old code stored: no "mechanism" or "reference_price" key, outputs from plain VCG.
    inputs = {
        "asks": [{"id": "node-1", "units": 4, "cost": "0.4"}],
        "bids": [{"id": "bid-7", "units": 2, "value": "1.1"}],
        "max_cost": "10000",
    }
    asks, bids = [Ask("node-1", 4, Decimal("0.4"))], [EngineBid("bid-7", 2, Decimal("1.1"))]
    outputs = result_to_json(engine_clear(asks, bids, max_cost=Decimal(10000), mechanism="vcg"))
    assert outputs["budget"] == "-1.40"
    old = MarketRound.objects.create(
        pool=Pool.objects.get(pk=pool.pk),
        inputs=inputs,
        outputs=outputs,
        digest=canonical_digest(inputs, outputs),
        mechanism="vcg",
        parameters={"max_cost": "10000"},
        bids_count=1,
        asks_count=1,
        units_traded=2,
        buyer_payments_per_hour=800_000,
        provider_payments_per_hour=2_200_000,
        budget_per_hour=-1_400_000,
    )
    assert round_recompute(market_round=old).matches
    # The same inputs under today's default would price differently: the stored name is what keeps it checkable.
    tampered = MarketRound(**{**{f.attname: getattr(old, f.attname) for f in MarketRound._meta.concrete_fields}})
    tampered.mechanism = "trade-reduction"
    assert not round_recompute(market_round=tampered).matches


@pytest.mark.django_db
def test_new_rounds_recompute_through_the_service_too(provider, buyer):
    online_node(provider, vgpus=3, price=300_000)
    submit(buyer, 2, 2 * USDC, "r1")
    market_round = market_round_run(pool_id=VGpu.objects.first().pool_id)
    assert market_round.units_traded == 2 and market_round.budget_per_hour >= 0
    assert round_recompute(market_round=market_round).matches


@pytest.mark.django_db
def test_paused_offline_and_deleted_nodes_sell_nothing(provider, buyer):
    paused = online_node(provider, name="paused", vgpus=2)
    paused.ask_paused = True
    paused.save(update_fields=["ask_paused"])
    offline = online_node(provider, name="offline", vgpus=2)
    node_transition(node=offline, to_state=NodeState.OFFLINE, reason="lost")
    submit(buyer, 1, 5 * USDC, "r1")
    market_round = market_round_run(pool_id=paused.vgpus.first().pool_id)
    assert market_round.asks_count == 0
    assert market_round.units_traded == 0
    assert Bid.objects.get().state == BidState.PENDING


@pytest.mark.django_db
def test_bids_past_their_deadline_expire_and_an_empty_pool_has_no_round(provider, buyer):
    node = online_node(provider, vgpus=1)
    submit(buyer, 1, USDC, "old", deadline=timezone.now() - timedelta(seconds=1))
    assert market_round_run(pool_id=node.vgpus.first().pool_id) is None
    assert Bid.objects.get().state == BidState.EXPIRED
    assert not MarketRound.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_bid_allocated_is_sent_after_commit(provider, buyer):
    node = online_node(provider, vgpus=1)
    bid = submit(buyer, 1, USDC, "r1")
    received = []

    def receiver(sender, bid_id, round_id, **kwargs):
        received.append((bid_id, round_id))

    bid_allocated.connect(receiver, weak=False)
    try:
        market_round = market_round_run(pool_id=node.vgpus.first().pool_id)
    finally:
        bid_allocated.disconnect(receiver)
    assert received == [(bid.pk, market_round.pk)]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL row locks")
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_rounds_never_place_a_vgpu_twice():
    provider, buyer = UserFactory(), UserFactory()
    pool_id = None
    for i in range(4):
        pool_id = online_node(provider, name=f"n{i}", vgpus=4, price=100_000 * (i + 1)).vgpus.first().pool_id
    for i in range(40):
        submit(buyer, 1 + i % 4, 500_000 + 37_000 * i, f"r{i}")

    barrier = threading.Barrier(2)
    errors = []

    def run():
        try:
            barrier.wait()
            for _ in range(3):
                market_round_run(pool_id=pool_id)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    placed = list(Allocation.vgpus.through.objects.values_list("vgpu_id", flat=True))
    assert len(placed) == len(set(placed)) == 16  # every vGPU sold, none twice
    holders = dict(VGpu.objects.values_list("pk", "holder"))
    for allocation in Allocation.objects.prefetch_related("vgpus"):
        assert len(allocation.vgpus.all()) == allocation.units
        assert {holders[v.pk] for v in allocation.vgpus.all()} == {f"bid:{allocation.bid_id}"}
    for bid in Bid.objects.filter(state=BidState.WON):
        assert sum(a.units for a in bid.allocations.all()) == bid.units
    assert MarketRound.objects.filter(units_traded__gt=0).exists()


@pytest.mark.django_db
def test_round_task_runs_a_round_for_every_pool_with_bids(provider, buyer, celery_eager):
    from pricing.tasks import market_rounds_tick

    online_node(provider, vgpus=2, price=100_000)
    online_node(provider, name="h", vgpus=1, price=100_000, pool_name="hopper-20g")
    submit(buyer, 1, USDC, "a")
    submit(buyer, 1, USDC, "b", pool="hopper-20g")
    assert market_rounds_tick.apply().get() == 2
    assert set(MarketRound.objects.values_list("pool__name", flat=True)) == {"ada-12g", "hopper-20g"}
    assert Bid.objects.filter(state=BidState.WON).count() == 2
