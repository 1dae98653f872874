"""Proof of Contribution: delivered hours, stake and surplus at paid prices; an exact, once-only JCT split."""

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from ledger.currencies import Currency
from ledger.models import Account, AccountKind, StakeEvent, Transaction
from ledger.settlement.batches import settlement_batch_run
from nodes.models import NodePlacement, Pool, UsageReport
from pricing.models import MarketRound
from pricing.pvcg import Ask, Bid, clear
from pricing.services import bid_submit, from_price, market_round_run
from reputation.contribution import (
    EpochNotOver,
    contribution_epoch_close,
    contribution_epoch_run,
    emission_split,
    epoch_bounds,
    reputation_weight,
    stake_weight,
)
from reputation.models import ContributionEpoch, ContributionScore
from tests.factories import UserFactory, online_node
from tests.settlement.helpers import claim_call, leaf_amounts, link_wallet
from tests.settlement.test_batches import proof_for

HOUR_MS = 3_600_000
JCT = 10**18
EMISSION = 1000 * JCT


@pytest.fixture
def epoch(settings):
    """One-hour epochs; return the (start, end) of the last finished one."""
    settings.POC_EPOCH_SECONDS = 3600
    settings.POC_EMISSION_JCT = "1000"
    settings.POC_SURPLUS_POINTS_PER_USDC = "1"
    settings.POC_MAX_JCT_PER_USDC_FEE = ""  # the fee cap has its own test below
    return epoch_bounds(moment=timezone.now() - timedelta(hours=1))


def ms(moment) -> int:
    return int(moment.timestamp() * 1000)


def deliver(node, *, start_ms: int, end_ms: int, vgpus: int) -> UsageReport:
    """Record a verified usage report of ``vgpus`` vGPUs on ``node`` over [start_ms, end_ms)."""
    placement = NodePlacement.objects.create(node=node, placement_id=f"p-{uuid.uuid4()}", state="running")
    return UsageReport.objects.create(
        placement=placement,
        seq=1,
        interval_start_ms=start_ms,
        interval_end_ms=end_ms,
        vgpu_count=vgpus,
        vgpu_milliseconds=vgpus * (end_ms - start_ms),
        signature=b"verified-by-the-gateway",
    )


def trade(pool_name: str, bids: list[tuple[int, int]], *, at) -> MarketRound:
    """Run a real round of ``bids`` (units, max price in USDC base units) and date it ``at``."""
    buyer = UserFactory()
    for units, price in bids:
        bid_submit(
            owner=buyer, pool_name=pool_name, units=units, max_price_per_hour=price, reference=f"r-{uuid.uuid4()}"
        )
    market_round = market_round_run(pool_id=Pool.objects.get(name=pool_name).pk)
    MarketRound.objects.filter(pk=market_round.pk).update(created_at=at)
    return market_round


def stake(address: str, amount: int, *, at, kind=StakeEvent.Kind.STAKED) -> None:
    """Record a stake event of ``address`` as if the watcher had seen it at ``at``."""
    event = StakeEvent.objects.create(
        chain_id=31337,
        tx_hash="0x" + uuid.uuid4().hex * 2,
        log_index=0,
        block_number=1,
        kind=kind,
        account=address,
        amount=amount,
    )
    StakeEvent.objects.filter(pk=event.pk).update(created_at=at)


def jct_earnings(user) -> int:
    account = Account.objects.filter(owner=user, kind=AccountKind.EARNINGS, currency=Currency.JCT).first()
    return int(account.balance) if account else 0


# --- Pure parts ----------------------------------------------------------------------------------------


@given(
    st.dictionaries(st.integers(1, 10**6), st.integers(0, 10**30), min_size=1, max_size=30),
    st.integers(0, 10**24),
)
def test_split_sums_exactly_to_the_emission_and_stays_within_one_unit_of_pro_rata(scores, emission):
    shares = emission_split(scores=scores, emission=emission)

    total = sum(scores.values())
    if total == 0 or emission == 0:
        assert shares == {}
        return
    assert sum(shares.values()) == emission
    for user_id, score in scores.items():
        exact = Decimal(emission) * score / total
        assert 0 <= shares.get(user_id, 0) - int(exact) <= 1
        assert score > 0 or user_id not in shares


def test_split_gives_leftover_units_to_the_largest_remainders():
    assert emission_split(scores={1: 1, 2: 1, 3: 1}, emission=10) == {1: 4, 2: 3, 3: 3}
    assert emission_split(scores={1: 1, 2: 2}, emission=10) == {1: 3, 2: 7}


def test_stake_weight_is_one_plus_log10_of_one_plus_jct_capped_at_five():
    assert stake_weight(0) == 1
    assert stake_weight(9 * JCT) == 2
    assert stake_weight(99 * JCT) == 3
    assert stake_weight(10**9 * JCT) == 5
    assert stake_weight(JCT) == Decimal("1.301029")


def test_reputation_weight_is_one_for_a_provider_without_evidence(db):
    # Scores with evidence: tests/reputation/test_acts.py (weight = score / cold-start score).
    assert reputation_weight(user_id=UserFactory().pk) == 1


# --- Scoring an epoch ----------------------------------------------------------------------------------


def test_delivered_vgpu_hours_are_clipped_to_the_epoch(db, epoch):
    start, end = epoch
    inside, straddling = UserFactory(), UserFactory()
    # 2 vGPUs for 30 minutes inside the epoch: 1 vGPU-hour.
    deliver(online_node(inside), start_ms=ms(start) + 60_000, end_ms=ms(start) + 60_000 + HOUR_MS // 2, vgpus=2)
    # 1 vGPU for 2 hours, of which the last 30 minutes fall in the epoch: 0.5 vGPU-hour.
    deliver(online_node(straddling), start_ms=ms(start) - 90 * 60_000, end_ms=ms(start) + 30 * 60_000, vgpus=1)
    # Entirely after the epoch: ignored.
    deliver(online_node(inside, name="rig2"), start_ms=ms(end), end_ms=ms(end) + HOUR_MS, vgpus=4)

    closed = contribution_epoch_close(start=start)

    scores = {s.user_id: s for s in closed.scores.all()}
    assert scores[inside.pk].vgpu_milliseconds == HOUR_MS
    assert scores[inside.pk].score == 1_000_000
    assert scores[straddling.pk].vgpu_milliseconds == HOUR_MS // 2
    assert scores[straddling.pk].score == 500_000
    # 2/3 and 1/3 of the emission; the one base unit left over goes to the larger remainder.
    assert scores[inside.pk].reward == EMISSION * 2 // 3 + 1
    assert scores[straddling.pk].reward == EMISSION // 3
    assert closed.distributed == closed.emission == EMISSION


def test_recorded_stake_of_linked_wallets_weights_delivered_hours(db, epoch):
    start, end = epoch
    staker, plain = UserFactory(), UserFactory()
    wallet = link_wallet(staker, "0x" + "ab" * 20)
    stake(wallet.address, 150 * JCT, at=start - timedelta(days=3))
    stake(wallet.address, 51 * JCT, at=start + timedelta(minutes=5), kind=StakeEvent.Kind.UNSTAKE_REQUESTED)
    stake(wallet.address, 10**6 * JCT, at=end)  # recorded after the epoch: does not count for it
    for user in (staker, plain):
        deliver(online_node(user), start_ms=ms(start), end_ms=ms(start) + HOUR_MS, vgpus=1)

    closed = contribution_epoch_close(start=start)

    scores = {s.user_id: s for s in closed.scores.all()}
    assert scores[staker.pk].stake == 99 * JCT and scores[staker.pk].stake_weight == 3
    assert scores[plain.pk].stake == 0 and scores[plain.pk].stake_weight == 1
    assert scores[staker.pk].score == 3 * scores[plain.pk].score == 3_000_000
    assert jct_earnings(staker) == 3 * jct_earnings(plain) == EMISSION * 3 // 4


def test_surplus_term_is_the_trade_surplus_at_the_prices_actually_paid(db, epoch):
    start, _ = epoch
    cheap, dear = UserFactory(), UserFactory()
    cheap_node = online_node(cheap, price=100_000, pool_name="ada-24g")  # 0.10 USDC per vGPU-hour, 2 vGPUs
    dear_node = online_node(dear, price=300_000, pool_name="ada-24g")  # 0.30
    market_round = trade("ada-24g", [(3, 1_000_000), (1, 500_000)], at=start + timedelta(minutes=5))

    closed = contribution_epoch_close(start=start)

    stored = MarketRound.objects.get(pk=market_round.pk)
    result = clear(
        [Ask(a["id"], a["units"], Decimal(a["cost"])) for a in stored.inputs["asks"]],
        [Bid(b["id"], b["units"], Decimal(b["value"])) for b in stored.inputs["bids"]],
        reference_price=Decimal(stored.inputs["reference_price"]),
    )
    paid = {a.id: a for a in result.asks}
    scores = {s.user_id: s for s in closed.scores.all()}
    for user, node in ((cheap, cheap_node), (dear, dear_node)):
        ask = paid[f"node-{node.pk}"]
        assert (
            scores[user.pk].marginal_surplus == from_price(ask.payment) - node.reserve_price_per_hour * ask.units_sold
        )
        assert scores[user.pk].rounds_traded == 1
        # No delivered hours: the score is the surplus alone, one point (10**6 micro-points) per USDC/hour.
        assert scores[user.pk].score == scores[user.pk].marginal_surplus
    # The reference 1.00 is above the 1-unit bid's 0.50, so that bid drops out and 3 units trade at 1.00:
    # cheap sells 2 (2.00 paid, 0.20 cost), dear 1 (1.00 paid, 0.30 cost).
    assert {u: scores[u].marginal_surplus for u in scores} == {cheap.pk: 1_800_000, dear.pk: 700_000}


def test_a_fake_high_bid_and_self_delivery_earn_no_contribution(db, epoch):
    start, _ = epoch
    attacker = UserFactory()
    node = online_node(attacker, price=100_000, pool_name="ada-24g", vgpus=1)
    bid_submit(owner=attacker, pool_name="ada-24g", units=1, max_price_per_hour=10_000_000_000, reference="self")
    market_round = market_round_run(pool_id=Pool.objects.get(name="ada-24g").pk)
    MarketRound.objects.filter(pk=market_round.pk).update(created_at=start + timedelta(minutes=5))
    assert market_round.units_traded == 1 and market_round.budget_per_hour == 0
    # Its own rental's usage on its own node, as the gateway would record it.
    report = deliver(node, start_ms=ms(start), end_ms=ms(start) + HOUR_MS // 2, vgpus=1)
    from marketplace.rentals.models import Rental, RentalPlacement

    rental = Rental.objects.create(
        owner=attacker,
        pool=node.vgpus.first().pool,
        vgpus=1,
        max_price_per_hour=1,
        max_duration_seconds=3600,
        image="busybox",
        match_deadline=timezone.now(),
    )
    RentalPlacement.objects.create(
        rental=rental,
        bid=market_round.won_bids.get(),
        node=node,
        provider=attacker,
        placement_id=report.placement.placement_id,
        vgpu_count=1,
        bid_units=1,
        provider_units=1,
        buyer_payment_per_hour=1,
        provider_payment_per_hour=1,
        limit_ms=HOUR_MS,
    )

    closed = contribution_epoch_close(start=start)

    assert not closed.scores.filter(user=attacker).exists()
    assert jct_earnings(attacker) == 0


def test_rewards_are_capped_by_the_fees_the_providers_deliveries_paid(db, epoch, settings):
    from ledger.services import ledger_charge, ledger_deposit, ledger_hold

    start, _ = epoch
    settings.POC_MAX_JCT_PER_USDC_FEE = "2"
    paying, free_rider = UserFactory(), UserFactory()
    for provider in (paying, free_rider):
        deliver(online_node(provider), start_ms=ms(start), end_ms=ms(start) + HOUR_MS // 4, vgpus=1)
    buyer = UserFactory()
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=10_000_000, idempotency_key="cap-dep")
    ledger_hold(user_id=buyer.pk, currency="USDC", amount=10_000_000, idempotency_key="cap-hold")
    charge = ledger_charge(
        buyer_id=buyer.pk, provider_id=paying.pk, currency="USDC", buyer_amount=10_000_000, idempotency_key="cap-ch"
    )
    from ledger.models import Transaction as LedgerTransaction

    LedgerTransaction.objects.filter(pk=charge.transaction.pk).update(created_at=start + timedelta(minutes=3))

    closed = contribution_epoch_close(start=start)

    # 10 USDC charged, a 5 % fee of 0.50 USDC: at most 2 JCT per USDC of fees, so 1 JCT; the other provider's
    # deliveries paid no fee and earn nothing. The rest of the emission stays in the rewards pool.
    assert jct_earnings(paying) == JCT
    assert jct_earnings(free_rider) == 0
    assert closed.distributed == JCT and closed.emission == EMISSION


def test_split_is_exact_and_credited_from_the_rewards_pool_to_jct_earnings(db, epoch):
    start, _ = epoch
    providers = [UserFactory() for _ in range(3)]
    for minutes, provider in zip((7, 11, 13), providers, strict=True):
        deliver(online_node(provider), start_ms=ms(start), end_ms=ms(start) + minutes * 60_000, vgpus=1)

    closed = contribution_epoch_close(start=start)

    rewards = {s.user_id: int(s.reward) for s in closed.scores.all()}
    assert sum(rewards.values()) == EMISSION == int(closed.distributed)
    assert {p.pk: jct_earnings(p) for p in providers} == rewards
    pool = Account.objects.get(owner__isnull=True, kind=AccountKind.REWARDS_POOL, currency=Currency.JCT)
    assert int(pool.balance) == -EMISSION
    assert Transaction.objects.filter(kind="reward").count() == 3


def test_closing_an_epoch_twice_posts_once(db, epoch):
    start, _ = epoch
    provider = UserFactory()
    deliver(online_node(provider), start_ms=ms(start), end_ms=ms(start) + HOUR_MS, vgpus=1)

    first = contribution_epoch_close(start=start)
    # New evidence after closing does not reopen the epoch.
    deliver(online_node(provider, name="late"), start_ms=ms(start), end_ms=ms(start) + HOUR_MS, vgpus=1)
    second = contribution_epoch_close(start=start)

    assert second.pk == first.pk
    assert ContributionEpoch.objects.count() == 1
    assert Transaction.objects.filter(kind="reward").count() == 1
    assert jct_earnings(provider) == EMISSION


def test_epoch_without_contribution_is_recorded_and_posts_nothing(db, epoch):
    start, _ = epoch
    closed = contribution_epoch_close(start=start)

    assert closed.distributed == 0 and closed.total_score == 0
    assert not closed.scores.exists()
    assert not Transaction.objects.exists()


def test_an_epoch_cannot_be_closed_before_it_ends(db, epoch):
    current, _ = epoch_bounds(moment=timezone.now())

    with pytest.raises(EpochNotOver):
        contribution_epoch_close(start=current)
    assert not ContributionEpoch.objects.exists()


def test_run_closes_each_finished_epoch_once_after_the_grace_period(db, epoch, settings):
    settings.POC_GRACE_SECONDS = 600
    start, end = epoch
    previous = start - timedelta(hours=1)
    provider = UserFactory()
    node = online_node(provider)
    deliver(node, start_ms=ms(previous), end_ms=ms(start), vgpus=1)
    deliver(node, start_ms=ms(start), end_ms=ms(end), vgpus=2)

    assert [e.start for e in contribution_epoch_run(now=end + timedelta(seconds=599))] == [previous]
    assert [e.start for e in contribution_epoch_run(now=end + timedelta(seconds=600))] == [start]
    assert contribution_epoch_run(now=end + timedelta(seconds=600)) == []
    assert Transaction.objects.filter(kind="reward").count() == 2
    assert jct_earnings(provider) == 2 * EMISSION
    assert ContributionScore.objects.aggregate(total=Sum("vgpu_milliseconds"))["total"] == 3 * HOUR_MS


def test_celery_task_runs_the_epoch_service(db, epoch, settings, celery_eager):
    from reputation.tasks import contribution_epoch_run_task

    settings.POC_GRACE_SECONDS = 0
    start, _ = epoch
    deliver(online_node(UserFactory()), start_ms=ms(start), end_ms=ms(start) + HOUR_MS, vgpus=1)

    contribution_epoch_run_task.delay().get()

    assert ContributionEpoch.objects.filter(distributed=EMISSION).exists()


# --- Into settlement ----------------------------------------------------------------------------------


def test_rewards_enter_the_next_settlement_batch_and_can_be_claimed(market, live, epoch):
    start, _ = epoch
    deliver(online_node(market.provider), start_ms=ms(start), end_ms=ms(start) + HOUR_MS, vgpus=1)
    other = UserFactory()
    link_wallet(other, live.bob.address)
    deliver(online_node(other), start_ms=ms(start), end_ms=ms(start) + HOUR_MS // 3, vgpus=3)

    closed = contribution_epoch_close(start=start)
    batch = settlement_batch_run()

    reward = int(closed.scores.get(user=market.provider).reward)
    assert reward == EMISSION // 2
    leaves = [leaf[1:] for leaf in leaf_amounts(json.loads(batch.data.content))]
    assert [live.jct.address, live.alice.address, str(reward)] in leaves
    assert [live.jct.address, live.bob.address, str(EMISSION - reward)] in leaves
    assert json.loads(batch.data.content)["jct_rewards"] == str(EMISSION)

    # No manual transfer: the post minted the epoch's emission into the contract.
    assert live.jct.functions.balanceOf(live.settlement.address).call() == EMISSION
    leaf = next(row for row in proof_for(market.provider)["leaves"] if row["currency"] == Currency.JCT)
    before = live.jct.functions.balanceOf(live.alice.address).call()
    amount = int(leaf["cumulative_amount"])
    assert amount == reward
    live.send(live.alice, claim_call(live.settlement, leaf))
    assert live.jct.functions.balanceOf(live.alice.address).call() - before == reward


def test_epoch_bound_compares_numbers_not_text(db):
    from django.db import IntegrityError, transaction

    start = timezone.now().replace(microsecond=0)
    # Fewer digits but a larger first digit: a text comparison (SQLite stores base units as text) got this wrong.
    ContributionEpoch.objects.create(
        start=start, end=start + timedelta(hours=1), emission=EMISSION, distributed=5 * 10**16, total_score=1
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        ContributionEpoch.objects.create(
            start=start + timedelta(hours=1),
            end=start + timedelta(hours=2),
            emission=EMISSION,
            distributed=EMISSION + 10**18,
            total_score=1,
        )
