"""Where reputation acts: admission to rounds and placement ties (pricing's hook), Proof of Contribution weights."""

from __future__ import annotations

import statistics
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.utils import timezone

from janction.errors import ValidationFailed
from ledger.fields import ExactSum
from ledger.models import StakeEvent, Wallet
from ledger.staking import stake_balances
from nodes.models import Node, NodeState
from pricing.standing import Standing
from reputation import config
from reputation.models import SubjectKind
from reputation.selectors import score_of, scores


def pool_standing(pool_name: str, node_ids: list[int]) -> Standing:
    """Return the nodes' scores, the pool's minimum and the nodes the staking gate keeps out (pricing.standing)."""
    return Standing(
        scores=scores(kind=SubjectKind.NODE, ids=node_ids),
        minimum=config.pool_min_score(pool_name),
        rank=settings.REPUTATION_PLACEMENT_TIE_BREAK,
        excluded=frozenset(understaked_nodes(pool_name=pool_name, node_ids=node_ids)),
    )


def understaked_nodes(*, pool_name: str, node_ids: list[int]) -> set[int]:
    """Return the nodes whose provider's JCT stake is below the pool's minimum (none when the gate is off)."""
    minimum = config.pool_min_stake(pool_name)
    if minimum <= 0:
        return set()
    owners = dict(Node.objects.filter(pk__in=node_ids).values_list("pk", "owner_id"))
    stakes = provider_stakes(user_ids=set(owners.values()), at=timezone.now())
    return {node for node, owner in owners.items() if stakes.get(owner, 0) < minimum}


def provider_stakes(*, user_ids: set[int], at) -> dict[int, int]:
    """Return each provider's JCT stake in base units, as the staking gate counts it.

    Embedded default (no CHAIN_RPC_URL): the ledger-level stake (ledger.staking; unstaking JCT does not count).
    Real mode: the on-chain stake as the chain watcher recorded it, over the provider's wallets, at `at`.
    """
    if not settings.CHAIN_RPC_URL:
        return {user: balance.staked for user, balance in stake_balances(user_ids=user_ids).items()}
    return onchain_stakes(user_ids=user_ids, at=at)


def onchain_stakes(*, user_ids: set[int], at) -> dict[int, int]:
    """Return each provider's recorded on-chain JCT stake (staked less unstake requested and slashed) at `at`."""
    owner_of = dict(Wallet.objects.filter(user_id__in=user_ids).values_list("address", "user_id"))
    stakes: dict[int, int] = {}
    totals = (
        StakeEvent.objects.filter(account__in=owner_of, created_at__lt=at)
        .values_list("account", "kind")
        .annotate(total=ExactSum("amount"), from_pending=ExactSum("from_pending"))
        .order_by()
    )
    for account, kind, total, from_pending in totals:
        if kind == StakeEvent.Kind.SLASHED:
            # The part of a slash taken from a pending unstake was already subtracted with its unstake request.
            change = -(int(total) - int(from_pending or 0))
        else:
            sign = {StakeEvent.Kind.STAKED: 1, StakeEvent.Kind.UNSTAKE_REQUESTED: -1}.get(kind, 0)
            change = sign * int(total)
        stakes[owner_of[account]] = stakes.get(owner_of[account], 0) + change
    return {user: max(stake, 0) for user, stake in stakes.items()}


def provider_weight(*, user_id: int) -> Decimal:
    """Return a provider's Proof of Contribution reputation weight: its score over the cold-start score.

    A provider without evidence weighs 1 (as before reputation existed), a better one up to 1 / cold start
    (2 with the default prior), a worse one down to 0. 1 for everyone with REPUTATION_POC_WEIGHTS off.
    """
    if not settings.REPUTATION_POC_WEIGHTS:
        return Decimal(1)
    prior_positive, prior_negative = config.priors()
    cold_start = Decimal(prior_positive) / (prior_positive + prior_negative)
    score = score_of(kind=SubjectKind.PROVIDER, subject_id=user_id)
    return (score / cold_start).quantize(Decimal("0.000001"), rounding=ROUND_DOWN)


MIN_SCORE_RULE = "give a number from 0 to 1 with at most 6 decimals, e.g. 0.6."


def min_score_filter(text: str) -> Decimal | None:
    """Read a `min_score` filter (market page, offers API): None when empty; ValidationFailed naming it when bad."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = Decimal(text[:40]) if len(text) <= 40 else None
    except ArithmeticError:
        value = None
    if value is None or not value.is_finite() or not Decimal(0) <= value <= Decimal(1) or value != value.quantize(
        Decimal("0.000001")
    ):
        raise ValidationFailed(
            f"min_score is {text[:40]!r}: {MIN_SCORE_RULE}", code="invalid_filter", detail={"filter": "min_score"}
        )
    return value


def pool_score_distributions(*, min_score: Decimal | None = None) -> list[dict]:
    """Return per pool the scores of its live nodes: count, minimum to enter, quartiles and each node's score.

    The distribution covers every node; with `min_score` the list of nodes holds only those scoring at least that.
    """
    by_pool: dict[str, set[int]] = {}
    rows = Node.objects.filter(deleted_at__isnull=True).exclude(state=NodeState.PENDING)
    for node_id, pool in rows.values_list("pk", "vgpus__pool__name").distinct():
        if pool is not None:
            by_pool.setdefault(pool, set()).add(node_id)
    all_scores = scores(kind=SubjectKind.NODE, ids=sorted(set().union(*by_pool.values())) if by_pool else [])
    result = []
    for pool in sorted(by_pool):
        values = sorted(all_scores[n] for n in by_pool[pool])
        quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
        result.append(
            {
                "pool": pool,
                "nodes": len(values),
                "min_score_to_enter": config.pool_min_score(pool),
                "lowest": values[0],
                "quartiles": [Decimal(q).quantize(Decimal("0.000001")) for q in quartiles],
                "highest": values[-1],
                "node_scores": [
                    {"node": n, "score": all_scores[n]}
                    for n in sorted(by_pool[pool])
                    if min_score is None or all_scores[n] >= min_score
                ],
            }
        )
    return result
