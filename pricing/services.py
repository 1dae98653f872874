"""Pricing writes: bids, market rounds (engine + placement) and price estimates."""

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from ledger.currencies import USDC_SCALE
from nodes.availability import interruptible_nodes, nodes_out_of_market
from nodes.models import Node, NodeState, Pool, VGpu, VGpuState
from nodes.services import Holder, vgpus_reserve
from pricing.errors import InvalidBid, UnknownPool
from pricing.locality import placement_affinity
from pricing.models import Allocation, Bid, BidState, Capacity, MarketRound, RoundAward
from pricing.placement import plan_placements
from pricing.pvcg import TRADE_REDUCTION, Ask, Result, clear, market_clear, parse_market, result_to_json
from pricing.pvcg import Bid as EngineBid
from pricing.signals import bid_allocated
from pricing.standing import Standing, node_standing

logger = logging.getLogger(__name__)

MICRO = Decimal(USDC_SCALE)
SCORE_QUANTUM = Decimal("0.000001")


def to_price(base_units: int) -> Decimal:
    """Return USDC base units as a Decimal amount (what the engine takes)."""
    return Decimal(base_units) / MICRO


def from_price(amount: Decimal) -> int:
    """Return an engine amount (exact to six decimals) as USDC base units."""
    scaled = amount * MICRO
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of USDC base units")
    return int(scaled)


def canonical_digest(inputs: dict, outputs: dict) -> str:
    """Return the SHA-256 of the canonical JSON of a round's inputs and outputs."""
    payload = json.dumps({"inputs": inputs, "outputs": outputs}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def bid_submit(
    *,
    owner,
    pool_name: str,
    units: int,
    max_price_per_hour: int,
    reference: str,
    deadline: datetime | None = None,
    capacity: str = Capacity.DEDICATED,
    min_provider_score: Decimal | None = None,
    needs_egress: bool = False,
) -> Bid:
    """Queue a bid for the next rounds of its pool's sub-pool (dedicated or interruptible capacity).

    `min_provider_score` (a Decimal in [0, 1] with at most 6 decimals, or None) limits the nodes it may buy from.
    """
    if capacity not in Capacity.values:
        raise InvalidBid(f"capacity is one of {', '.join(Capacity.values)}.")
    if min_provider_score is not None and (
        not isinstance(min_provider_score, Decimal)
        or not min_provider_score.is_finite()
        or not Decimal(0) <= min_provider_score <= Decimal(1)
        or min_provider_score != min_provider_score.quantize(SCORE_QUANTUM)
    ):
        raise InvalidBid("A bid's min_provider_score is a number from 0 to 1 with at most 6 decimals.")
    pool = Pool.objects.filter(name=pool_name).first()
    if pool is None:
        raise UnknownPool(f"There is no pool named {pool_name!r}; see /api/v1/pools/ for the pools on offer.")
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise InvalidBid("A bid needs a positive whole number of vGPUs.")
    if isinstance(max_price_per_hour, bool) or not isinstance(max_price_per_hour, int) or max_price_per_hour < 0:
        raise InvalidBid("A bid's max price is a non-negative number of USDC base units per vGPU-hour.")
    deadline = deadline or timezone.now() + timedelta(seconds=settings.PRICING_BID_DEADLINE_SECONDS)
    return Bid.objects.create(
        owner=owner,
        pool=pool,
        units=units,
        max_price_per_hour=max_price_per_hour,
        reference=reference,
        deadline=deadline,
        capacity=capacity,
        min_provider_score=min_provider_score or None,
        needs_egress=needs_egress,
    )


def bid_cancel(*, bid_id: int) -> bool:
    """Withdraw a pending bid; return whether it was still pending."""
    return bool(Bid.objects.filter(pk=bid_id, state=BidState.PENDING).update(state=BidState.CANCELLED))


@dataclass(frozen=True)
class OrderBook:
    asks: list[Ask]
    bids: list[EngineBid]
    nodes: dict[str, Node]
    free_vgpus: dict[str, list[VGpu]]
    standing: Standing = field(default_factory=Standing)


def _order_book(
    pool: Pool,
    bids: list[Bid],
    *,
    lock: bool,
    capacity: str = Capacity.DEDICATED,
    egress: bool = False,
    min_provider_score: Decimal | None = None,
) -> OrderBook:
    """Build the engine's market from the pool's online, unpaused nodes of one capacity and their free vGPUs.

    With `egress`, only nodes whose agent allows internet egress ask (the others would refuse the placement).
    With `min_provider_score`, only the asks of nodes scoring at least that enter (the bids' own minimum).
    """
    vgpus = VGpu.objects.filter(
        pool=pool,
        state=VGpuState.FREE,
        node__state=NodeState.ONLINE,
        node__ask_paused=False,
        node__deleted_at__isnull=True,
    ).select_related("node")
    if egress:
        vgpus = vgpus.filter(node__egress_allowed=True)
    if lock:
        vgpus = vgpus.select_for_update(of=("self",))
    free: dict[str, list[VGpu]] = {}
    nodes: dict[str, Node] = {}
    vgpus = list(vgpus.order_by("node_id", "local_id"))
    # Colocation: a node whose availability policy keeps it out right now (outside its schedule, owner active)
    # asks for nothing; this filter runs at every round, so a window's end takes effect at the next one.
    node_ids = sorted({vgpu.node_id for vgpu in vgpus})
    away = nodes_out_of_market(node_ids=node_ids)
    # Interruptible and dedicated capacity are separate goods: each round sees the asks of one kind only.
    interruptible = interruptible_nodes(node_ids=node_ids)
    if capacity == Capacity.INTERRUPTIBLE:
        away |= set(node_ids) - interruptible
    else:
        away |= interruptible
    for vgpu in (vgpu for vgpu in vgpus if vgpu.node_id not in away):
        ask_id = f"node-{vgpu.node_id}"
        free.setdefault(ask_id, []).append(vgpu)
        nodes[ask_id] = vgpu.node
    # Asks of nodes below the pool's minimum score (pricing.standing, filled by reputation) do not enter.
    standing = node_standing(pool_name=pool.name, node_ids=sorted({node.pk for node in nodes.values()}))
    free = {ask_id: vgpus for ask_id, vgpus in free.items() if standing.admits(nodes[ask_id].pk)}
    if min_provider_score is not None:
        free = {
            ask_id: vgpus
            for ask_id, vgpus in free.items()
            if standing.scores.get(nodes[ask_id].pk, Decimal(1)) >= min_provider_score
        }
    if standing.rank:
        # The engine breaks ties between equal asks by input position: the higher score goes first.
        free = dict(sorted(free.items(), key=lambda item: -standing.scores.get(nodes[item[0]].pk, 0)))
    asks = [Ask(ask_id, len(free[ask_id]), to_price(nodes[ask_id].reserve_price_per_hour)) for ask_id in free]
    engine_bids = [EngineBid(f"bid-{bid.pk}", bid.units, to_price(bid.max_price_per_hour)) for bid in bids]
    return OrderBook(asks=asks, bids=engine_bids, nodes=nodes, free_vgpus=free, standing=standing)


def _max_cost() -> Decimal:
    return Decimal(settings.PRICING_MAX_RESERVE_PRICE)


def default_reserve_price() -> int:
    """Return the reserve price of a node enrolled without one: the default ask, USDC base units per vGPU-hour.

    A node joins its pools only when its agent reports its GPUs, so the per-pool overrides apply to rounds,
    not here.
    """
    return min(from_price(Decimal(settings.PRICING_DEFAULT_ASK)), from_price(_max_cost()))


def pool_default_ask(*, pool_name: str) -> int:
    """Return a pool's default ask in USDC base units per vGPU-hour (settings, per-pool override first)."""
    overrides = {}
    for pair in filter(None, (p.strip() for p in settings.PRICING_POOL_DEFAULT_ASKS.split(","))):
        name, _, price = pair.partition("=")
        overrides[name.strip()] = price.strip()
    text = overrides.get(pool_name, settings.PRICING_DEFAULT_ASK)
    try:
        price = from_price(Decimal(text))
    except (ArithmeticError, ValueError) as exc:
        raise ImproperlyConfigured(
            f"The default ask for pool {pool_name!r} is {text!r}; set PRICING_DEFAULT_ASK / PRICING_POOL_DEFAULT_ASKS "
            "to a USDC price with at most 6 decimals."
        ) from exc
    if price < 0:
        raise ImproperlyConfigured(f"The default ask for pool {pool_name!r} is negative ({text}).")
    return min(price, from_price(_max_cost()))


def _inputs_json(book: OrderBook, max_cost: Decimal, reference: Decimal) -> dict:
    return {
        "asks": [{"id": a.id, "units": a.units, "cost": str(a.cost)} for a in book.asks],
        "bids": [{"id": b.id, "units": b.units, "value": str(b.value)} for b in book.bids],
        "max_cost": str(max_cost),
        "mechanism": TRADE_REDUCTION,
        "reference_price": str(reference),
    }


@dataclass(frozen=True)
class Recomputation:
    outputs: dict
    digest: str
    matches: bool


def round_recompute(*, market_round: MarketRound) -> Recomputation:
    """Clear a stored round's inputs again with its stored mechanism and compare the digest."""
    inputs = dict(market_round.inputs)
    # Rounds stored before the mechanism was recorded carry no "mechanism" key: they were plain VCG.
    inputs.setdefault("mechanism", market_round.mechanism)
    outputs = result_to_json(market_clear(parse_market(inputs)))
    digest = canonical_digest(market_round.inputs, outputs)
    return Recomputation(outputs=outputs, digest=digest, matches=digest == market_round.digest)


def market_round_run(*, pool_id: int, capacity: str | None = None) -> MarketRound | None:
    """Clear a round of each of the pool's sub-pools (dedicated, interruptible) with waiting bids, or of one.

    Returns the dedicated round when it ran, else the interruptible one (None when nothing was cleared).
    """
    # Bids that need internet egress clear in rounds of their own, among the nodes that allow it.
    rounds = [
        _market_round_run(pool_id=pool_id, capacity=kind, egress=egress)
        for egress in (False, True)
        for kind in ([capacity] if capacity is not None else Capacity.values)
    ]
    return next((market_round for market_round in rounds if market_round is not None), None)


def _market_round_run(*, pool_id: int, capacity: str, egress: bool = False) -> MarketRound | None:
    """Clear one round of a sub-pool: price the waiting bids against the free vGPUs and reserve the winners'.

    Rounds of one pool are serialised by a row lock on the pool; the free vGPUs and pending bids are
    locked too, so a vGPU is never sold twice even when two workers run a round at once.
    Returns None when there was nothing to clear.
    """
    now = timezone.now()
    with transaction.atomic():
        pool = Pool.objects.select_for_update().filter(pk=pool_id).first()
        if pool is None:
            return None
        Bid.objects.filter(pool=pool, state=BidState.PENDING, deadline__lte=now).update(state=BidState.EXPIRED)
        bids = list(
            Bid.objects.select_for_update(skip_locked=True)
            .filter(pool=pool, state=BidState.PENDING, capacity=capacity, needs_egress=egress)
            .order_by("created_at", "pk")[: settings.PRICING_MAX_BIDS_PER_ROUND]
        )
        if not bids:
            return None
        # Bids that ask for a minimum provider score clear in rounds of their own, one per minimum, against the
        # asks of the nodes that meet it; the most demanding first, then the bids without one, as before.
        groups: dict[Decimal | None, list[Bid]] = {}
        for bid in bids:
            groups.setdefault(bid.min_provider_score, []).append(bid)
        order = sorted((m for m in groups if m is not None), reverse=True) + ([None] if None in groups else [])
        rounds = [
            _clear(pool, groups[minimum], capacity=capacity, egress=egress, min_provider_score=minimum)
            for minimum in order
        ]
    return rounds[-1]  # the round of the bids without a minimum when there were any


def _clear(
    pool: Pool, bids: list[Bid], *, capacity: str, egress: bool, min_provider_score: Decimal | None
) -> MarketRound:
    """Clear one round of these bids against the pool's free vGPUs (in the caller's transaction, pool locked)."""
    book = _order_book(
        pool, bids, lock=True, capacity=capacity, egress=egress, min_provider_score=min_provider_score
    )
    max_cost = _max_cost()
    # Nodes priced above the ceiling cannot trade (the API refuses such prices; this guards old rows).
    book = OrderBook(
        asks=[a for a in book.asks if a.cost <= max_cost],
        bids=book.bids,
        nodes=book.nodes,
        free_vgpus=book.free_vgpus,
        standing=book.standing,
    )
    reference = to_price(pool_default_ask(pool_name=pool.name))
    result = clear(book.asks, book.bids, max_cost=max_cost, reference_price=reference)
    inputs = _inputs_json(book, max_cost, reference)
    outputs = result_to_json(result)
    market_round = MarketRound.objects.create(
        pool=pool,
        inputs=inputs,
        outputs=outputs,
        digest=canonical_digest(inputs, outputs),
        mechanism=TRADE_REDUCTION,
        capacity=capacity,
        egress=egress,
        parameters={
            "max_cost": str(max_cost),
            "reference_price": str(reference),
            **({"min_provider_score": str(min_provider_score)} if min_provider_score is not None else {}),
        },
        bids_count=len(book.bids),
        asks_count=len(book.asks),
        units_traded=sum(a.units_sold for a in result.asks),
        buyer_payments_per_hour=sum(from_price(b.payment) for b in result.bids),
        provider_payments_per_hour=sum(from_price(a.payment) for a in result.asks),
        budget_per_hour=from_price(result.budget),
    )
    won = _allocate(market_round, result, book, {f"bid-{b.pk}": b for b in bids})
    for bid_id in won:
        transaction.on_commit(
            lambda bid_id=bid_id: bid_allocated.send(sender=Bid, bid_id=bid_id, round_id=market_round.pk)
        )
    kind = f"{capacity}, egress" if egress else capacity
    logger.info("round %s of %s (%s): %s bids, %s won", market_round.pk, pool.name, kind, len(bids), len(won))
    return market_round


def _allocate(market_round: MarketRound, result: Result, book: OrderBook, bids: dict[str, Bid]) -> list[int]:
    """Store awards, reserve concrete vGPUs for every winner, mark the bids won; return the won bid ids."""
    awards = {}
    for ask in result.asks:
        if ask.units_sold == 0:
            continue
        node = book.nodes[ask.id]
        awards[ask.id] = RoundAward.objects.create(
            round=market_round,
            node=node,
            units_sold=ask.units_sold,
            reserve_price_per_hour=node.reserve_price_per_hour,
            vcg_payment_per_hour=from_price(ask.vcg_payment),
            adjustment_per_hour=from_price(ask.adjustment),
            payment_per_hour=from_price(ask.payment),
        )
    winners = [(b.id, bids[b.id].units) for b in result.bids if b.won]
    standing = book.standing
    preference = (
        {ask_id: -standing.scores.get(book.nodes[ask_id].pk, 0) for ask_id in awards} if standing.rank else None
    )
    sold = {ask_id: award.units_sold for ask_id, award in awards.items()}
    # Multi-node ties: the buyer's region, then the lowest round trip over the overlay (pricing.locality).
    affinity = placement_affinity(
        bid_owners={bid_id: bids[bid_id].owner_id for bid_id, units in winners},
        nodes={ask_id: book.nodes[ask_id] for ask_id in awards},
    )
    plan = plan_placements(winners, sold, preference=preference, affinity=affinity)
    payments = {b.id: from_price(b.payment) for b in result.bids}
    free = {ask_id: list(vgpus) for ask_id, vgpus in book.free_vgpus.items()}
    won = []
    for bid_key, parts in plan.items():
        bid = bids[bid_key]
        for ask_id, units in parts:
            taken, free[ask_id] = free[ask_id][:units], free[ask_id][units:]
            vgpus_reserve(vgpus=taken, holder=Holder.bid(bid.pk))
            allocation = Allocation.objects.create(
                round=market_round, bid=bid, award=awards[ask_id], node=book.nodes[ask_id], units=units
            )
            allocation.vgpus.set(taken)
        bid.state = BidState.WON
        bid.round = market_round
        bid.payment_per_hour = payments[bid_key]
        bid.save(update_fields=["state", "round", "payment_per_hour"])
        won.append(bid.pk)
    return won


def market_rounds_due() -> list[int]:
    """Return the ids of pools with bids waiting."""
    return list(Bid.objects.filter(state=BidState.PENDING).values_list("pool_id", flat=True).distinct().order_by())


@dataclass(frozen=True)
class Estimate:
    would_win: bool
    payment_per_hour: int  # for all units, USDC base units
    price_per_vgpu_hour: Decimal
    free_units: int
    waiting_units: int


def price_estimate(
    *, pool_name: str, units: int, max_price_per_hour: int, capacity: str = Capacity.DEDICATED
) -> Estimate:
    """Clear the current order book of a sub-pool plus a hypothetical bid, without locking or storing anything."""
    pool = Pool.objects.filter(name=pool_name).first()
    if pool is None:
        raise UnknownPool(f"There is no pool named {pool_name!r}; see /api/v1/pools/ for the pools on offer.")
    waiting = list(
        Bid.objects.filter(pool=pool, state=BidState.PENDING, deadline__gt=timezone.now(), capacity=capacity)
    )
    book = _order_book(pool, waiting, lock=False, capacity=capacity)
    probe = EngineBid("estimate", units, to_price(max_price_per_hour))
    max_cost = _max_cost()
    reference = to_price(pool_default_ask(pool_name=pool.name))
    asks = [a for a in book.asks if a.cost <= max_cost]
    result = clear(asks, [*book.bids, probe], max_cost=max_cost, reference_price=reference)
    outcome = next(b for b in result.bids if b.id == "estimate")
    return Estimate(
        would_win=outcome.won,
        payment_per_hour=from_price(outcome.payment),
        price_per_vgpu_hour=(outcome.payment / units).quantize(Decimal("0.000001")),
        free_units=sum(a.units for a in book.asks),
        waiting_units=sum(b.units for b in book.bids),
    )
