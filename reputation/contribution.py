"""Proof of Contribution: score providers per epoch and split the epoch's JCT emission pro rata by score.

A provider's score (integer micro-points, docs/proof-of-contribution.md) is its delivered vGPU-hours times a
reputation weight times a stake weight, plus its trade surplus at the prices actually paid in the market
rounds it sold in. Trades with yourself (your node, your bid) count for nothing. The emission is split
exactly (largest remainder) and credited from the platform `rewards_pool` to each provider's JCT `earnings`,
which the next settlement batch publishes as cumulative JCT.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, localcontext

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from janction.errors import Conflict
from ledger.currencies import DECIMALS, Currency, to_base_units
from ledger.fields import ExactSum
from ledger.models import AccountKind, Entry, StakeEvent, TransactionKind, Wallet
from ledger.services import Leg, Posting, ledger_post_bulk
from nodes.models import UsageReport
from pricing.models import Allocation, RoundAward
from reputation.models import ContributionEpoch, ContributionScore
from reputation.signals import placement_buyers_requested

logger = logging.getLogger(__name__)

POINTS_PER_VGPU_HOUR = 1_000_000
MILLISECONDS_PER_HOUR = 3_600_000
USDC_BASE_UNITS = 10 ** DECIMALS[Currency.USDC]
JCT_BASE_UNITS = 10 ** DECIMALS[Currency.JCT]
# 1 + log10(1 + stake in JCT) reaches this at 9,999 JCT staked.
STAKE_WEIGHT_CAP = Decimal(5)
WEIGHT_QUANTUM = Decimal("0.000001")
# The most past epochs one run scores when the task was not run for a while.
MAX_CATCH_UP_EPOCHS = 7


# --- Pure scoring ------------------------------------------------------------------------------------


def reputation_weight(*, user_id: int) -> Decimal:
    """Return 1 for every provider: no reputation app exists yet, so there is no evidence to weigh.

    The reputation issue brings evidence and scores (docs/architecture.md); until it lands every provider
    is weighted equally rather than by an invented number.
    """
    return Decimal(1)


def stake_weight(stake: int) -> Decimal:
    """Return 1 + log10(1 + stake in whole JCT), capped at STAKE_WEIGHT_CAP and rounded down to 6 places."""
    if stake <= 0:
        return Decimal(1)
    with localcontext() as context:
        context.prec = 40
        weight = 1 + (1 + Decimal(stake) / JCT_BASE_UNITS).log10()
    return min(weight, STAKE_WEIGHT_CAP).quantize(WEIGHT_QUANTUM, rounding=ROUND_DOWN)


def contribution_score(
    *,
    vgpu_milliseconds: int,
    reputation: Decimal,
    stake: Decimal,
    marginal_surplus: int,
    surplus_points_per_usdc: Decimal,
) -> int:
    """Return a provider's score in micro-points: vGPU-hours x reputation x stake + weighted marginal surplus.

    ``marginal_surplus`` is in USDC base units per hour; ``surplus_points_per_usdc`` converts one USDC/hour
    of it into points, one point being one delivered vGPU-hour at weight 1.
    """
    with localcontext() as context:
        context.prec = 60
        delivered = Decimal(vgpu_milliseconds) * reputation * stake * POINTS_PER_VGPU_HOUR / MILLISECONDS_PER_HOUR
        surplus = Decimal(marginal_surplus) * surplus_points_per_usdc * POINTS_PER_VGPU_HOUR / USDC_BASE_UNITS
        return int(delivered.to_integral_value(ROUND_DOWN)) + int(surplus.to_integral_value(ROUND_DOWN))


def emission_split(*, scores: Mapping[int, int], emission: int) -> dict[int, int]:
    """Split ``emission`` base units pro rata to ``scores`` exactly: floors, then the largest remainders get 1 more.

    Ties in the remainder go to the smaller key, so the split is deterministic. Zero scores get nothing.
    """
    total = sum(scores.values())
    if total <= 0 or emission <= 0:
        return {}
    shares = {key: divmod(emission * score, total) for key, score in scores.items() if score > 0}
    left = emission - sum(base for base, _ in shares.values())
    lucky = sorted(shares, key=lambda key: (-shares[key][1], key))[:left]
    return {key: base + (key in lucky) for key, (base, _) in shares.items()}


# --- Reading an epoch's contributions --------------------------------------------------------------


@dataclass(frozen=True)
class ProviderContribution:
    """What one provider contributed in an epoch and the score it earns."""

    user_id: int
    vgpu_milliseconds: int
    reputation_weight: Decimal
    stake: int
    stake_weight: Decimal
    rounds_traded: int
    marginal_surplus: int
    score: int


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _buyers_of(placement_ids: set[str]) -> dict[str, int]:
    """Return the renting user of each placement id (placements not made by a rental are left out).

    Rentals live above this app, so it asks through its own signal, which the marketplace answers.
    """
    buyers: dict[str, int] = {}
    for _receiver, answer in placement_buyers_requested.send(sender=None, placement_ids=placement_ids):
        buyers.update(answer or {})
    return buyers


def _delivered(start: datetime, end: datetime) -> dict[int, int]:
    """Return verified vGPU-milliseconds per provider, each report's interval clipped to [start, end).

    Delivery to the provider's own rentals counts for nothing: renting your own node earns no JCT.
    """
    start_ms, end_ms = _to_ms(start), _to_ms(end)
    reports = list(
        UsageReport.objects.filter(interval_end_ms__gt=start_ms, interval_start_ms__lt=end_ms).values_list(
            "placement__node__owner_id",
            "placement__placement_id",
            "interval_start_ms",
            "interval_end_ms",
            "vgpu_milliseconds",
        )
    )
    buyers = _buyers_of({row[1] for row in reports})
    delivered: dict[int, int] = defaultdict(int)
    for owner_id, placement_id, first, last, vgpu_ms in reports:
        if buyers.get(placement_id) == owner_id:
            continue
        overlap = min(last, end_ms) - max(first, start_ms)
        delivered[owner_id] += vgpu_ms * overlap // (last - first)
    return delivered


def _marginal_surplus(start: datetime, end: datetime) -> tuple[dict[int, int], dict[int, int]]:
    """Return per provider its trade surplus at the prices actually paid in rounds of [start, end), and the round count.

    For each award: (payment - reserve price x units sold), over the units sold to other users' bids only.
    Payments under the default mechanism are set by the pool's reference price and excluded asks, not by the
    winning bids' reported values, so a fake high bid cannot inflate this term (docs/proof-of-contribution.md).
    """
    surplus: dict[int, int] = defaultdict(int)
    rounds: dict[int, set[int]] = defaultdict(set)
    awards = RoundAward.objects.filter(round__created_at__gte=start, round__created_at__lt=end)
    self_sold: dict[int, int] = defaultdict(int)
    own = Allocation.objects.filter(
        award__in=awards.values("pk"), bid__owner_id=models.F("node__owner_id")
    ).values_list("award_id", "units")
    for award_id, units in own.iterator(chunk_size=5_000):
        self_sold[award_id] += units
    rows = awards.values_list(
        "pk", "node__owner_id", "round_id", "units_sold", "reserve_price_per_hour", "payment_per_hour"
    )
    for award_id, owner_id, round_id, units, reserve, paid in rows.iterator(chunk_size=5_000):
        sold_to_others = units - self_sold.get(award_id, 0)
        if units and sold_to_others > 0:
            surplus[owner_id] += max(paid - reserve * units, 0) * sold_to_others // units
        rounds[owner_id].add(round_id)
    return surplus, {owner_id: len(ids) for owner_id, ids in rounds.items()}


def fees_paid(*, start: datetime, end: datetime) -> dict[int, int]:
    """Return per provider the USDC platform fees (base units) charged on its deliveries in [start, end)."""
    charges = Entry.objects.filter(
        transaction__kind=TransactionKind.CHARGE,
        transaction__created_at__gte=start,
        transaction__created_at__lt=end,
        currency=Currency.USDC,
    )
    fee_by_txn = dict(
        charges.filter(account__kind=AccountKind.FEES, account__owner__isnull=True).values_list(
            "transaction_id", "amount"
        )
    )
    fees: dict[int, int] = defaultdict(int)
    earners = charges.filter(transaction_id__in=list(fee_by_txn), account__kind=AccountKind.EARNINGS)
    for txn_id, owner_id in earners.values_list("transaction_id", "account__owner_id"):
        fees[owner_id] += int(fee_by_txn[txn_id])
    return fees


def reward_caps(*, user_ids: set[int], start: datetime, end: datetime) -> dict[int, int] | None:
    """Return each provider's most JCT (base units) for the epoch, or None when POC_MAX_JCT_PER_USDC_FEE is off.

    The cap is the fees its deliveries paid times POC_MAX_JCT_PER_USDC_FEE: JCT can only be earned by
    paying the platform, so buying your own capacity from a second account costs more than it earns
    whenever a JCT is worth less than 1 / POC_MAX_JCT_PER_USDC_FEE USDC.
    """
    rate = str(settings.POC_MAX_JCT_PER_USDC_FEE).strip()
    if not rate:
        return None
    per_base_unit = Decimal(rate) * JCT_BASE_UNITS / USDC_BASE_UNITS
    fees = fees_paid(start=start, end=end)
    return {user_id: int(Decimal(fees.get(user_id, 0)) * per_base_unit) for user_id in user_ids}


def _stakes(user_ids: set[int], end: datetime) -> dict[int, int]:
    """Return each user's JCT stake (staked less unstake requested) recorded before ``end``, over their wallets."""
    owner_of = dict(Wallet.objects.filter(user_id__in=user_ids).values_list("address", "user_id"))
    stakes: dict[int, int] = defaultdict(int)
    totals = (
        StakeEvent.objects.filter(account__in=owner_of, created_at__lt=end)
        .values_list("account", "kind")
        .annotate(total=ExactSum("amount"))
    )
    for account, kind, total in totals:
        if kind == StakeEvent.Kind.STAKED:
            stakes[owner_of[account]] += int(total)
        elif kind == StakeEvent.Kind.UNSTAKE_REQUESTED:
            stakes[owner_of[account]] -= int(total)
    return {user_id: max(stake, 0) for user_id, stake in stakes.items()}


def contribution_list(*, start: datetime, end: datetime) -> list[ProviderContribution]:
    """Return every provider with a positive score in [start, end), by user id."""
    delivered = _delivered(start, end)
    surplus, rounds = _marginal_surplus(start, end)
    user_ids = set(delivered) | set(surplus)
    stakes = _stakes(user_ids, end)
    points_per_usdc = Decimal(settings.POC_SURPLUS_POINTS_PER_USDC)
    contributions = []
    for user_id in sorted(user_ids):
        reputation, stake = reputation_weight(user_id=user_id), stakes.get(user_id, 0)
        weight = stake_weight(stake)
        score = contribution_score(
            vgpu_milliseconds=delivered.get(user_id, 0),
            reputation=reputation,
            stake=weight,
            marginal_surplus=surplus.get(user_id, 0),
            surplus_points_per_usdc=points_per_usdc,
        )
        if score > 0:
            contributions.append(
                ProviderContribution(
                    user_id=user_id,
                    vgpu_milliseconds=delivered.get(user_id, 0),
                    reputation_weight=reputation,
                    stake=stake,
                    stake_weight=weight,
                    rounds_traded=rounds.get(user_id, 0),
                    marginal_surplus=surplus.get(user_id, 0),
                    score=score,
                )
            )
    return contributions


# --- Closing epochs ------------------------------------------------------------------------------------


def epoch_bounds(*, moment: datetime) -> tuple[datetime, datetime]:
    """Return the [start, end) of the epoch containing ``moment`` (epochs are aligned to the Unix epoch)."""
    length = settings.POC_EPOCH_SECONDS
    start = datetime.fromtimestamp(int(moment.timestamp()) // length * length, tz=UTC)
    return start, start + timedelta(seconds=length)


def _idempotency_key(start: datetime, user_id: int) -> str:
    return f"poc:{start:%Y%m%dT%H%M%SZ}:{user_id}"


class EpochNotOver(Conflict):
    """An epoch cannot be scored before it has ended."""

    code = "epoch_not_over"


def contribution_epoch_close(*, start: datetime) -> ContributionEpoch:
    """Score the epoch starting at ``start`` and credit its JCT emission exactly once; return its record.

    Closing an epoch again returns the stored record and posts nothing: the epoch row is unique per start
    and is written in the same database transaction as the ledger postings (keyed per epoch and user).
    """
    start, end = epoch_bounds(moment=start)
    if end > timezone.now():
        raise EpochNotOver(f"The epoch starting {start.isoformat()} ends at {end.isoformat()}; score it after that.")
    existing = ContributionEpoch.objects.filter(start=start).first()
    if existing is not None:
        return existing
    contributions = contribution_list(start=start, end=end)
    emission = to_base_units(settings.POC_EMISSION_JCT, Currency.JCT, allow_zero=True)
    rewards = emission_split(scores={c.user_id: c.score for c in contributions}, emission=emission)
    caps = reward_caps(user_ids=set(rewards), start=start, end=end)
    if caps is not None:
        # What the cap holds back stays in the rewards pool: it is simply not emitted.
        rewards = {user_id: min(amount, caps[user_id]) for user_id, amount in rewards.items()}
    try:
        with transaction.atomic():
            epoch = ContributionEpoch.objects.create(
                start=start,
                end=end,
                emission=emission,
                distributed=sum(rewards.values()),
                total_score=sum(c.score for c in contributions),
            )
            ContributionScore.objects.bulk_create(
                [
                    ContributionScore(
                        epoch=epoch,
                        user_id=c.user_id,
                        vgpu_milliseconds=c.vgpu_milliseconds,
                        reputation_weight=c.reputation_weight,
                        stake=c.stake,
                        stake_weight=c.stake_weight,
                        rounds_traded=c.rounds_traded,
                        marginal_surplus=c.marginal_surplus,
                        score=c.score,
                        reward=rewards.get(c.user_id, 0),
                        ledger_idempotency_key=_idempotency_key(start, c.user_id) if rewards.get(c.user_id) else "",
                    )
                    for c in contributions
                ]
            )
            ledger_post_bulk(
                [
                    Posting(
                        kind=TransactionKind.REWARD,
                        currency=Currency.JCT,
                        idempotency_key=_idempotency_key(start, user_id),
                        legs=(Leg(None, AccountKind.REWARDS_POOL, -amount), Leg(user_id, AccountKind.EARNINGS, amount)),
                        memo=f"Proof of Contribution {start:%Y-%m-%d %H:%M} UTC",
                        metadata={"epoch_start": start.isoformat(), "epoch_end": end.isoformat()},
                    )
                    for user_id, amount in sorted(rewards.items())
                    if amount > 0
                ]
            )
    except IntegrityError:
        # Another worker closed this epoch first; its record (and its postings) stand.
        return ContributionEpoch.objects.get(start=start)
    logger.info("contribution: epoch %s scored %s providers, %s JCT base units", start, len(contributions), emission)
    return epoch


def contribution_epoch_run(*, now: datetime | None = None) -> list[ContributionEpoch]:
    """Close every epoch that ended at least POC_GRACE_SECONDS ago and is not closed yet, oldest first.

    A first run, or one after a long pause, goes back at most MAX_CATCH_UP_EPOCHS epochs.
    """
    now = now or timezone.now()
    length = timedelta(seconds=settings.POC_EPOCH_SECONDS)
    latest, _ = epoch_bounds(moment=now - timedelta(seconds=settings.POC_GRACE_SECONDS) - length)
    earliest = latest - (MAX_CATCH_UP_EPOCHS - 1) * length
    last_closed = ContributionEpoch.objects.filter(start__lte=latest).order_by("-start").first()
    start = max(earliest, last_closed.start + length) if last_closed else latest
    closed = []
    while start <= latest:
        closed.append(contribution_epoch_close(start=start))
        start += length
    return closed
