"""PVCG auction engine: clear one pool's round of asks and bids (pure Python + numpy, no Django).

Its command line is `python -m pricing.pvcg` (pricing/pvcg/__main__.py). The mechanism, the adjustment
payment and the limits are documented in docs/pricing.md.
"""

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pricing.engine.clearing import MAX_MAGNITUDE, clear_units, curve_lengths
from pricing.engine.reduction import clear_reduced

DECIMAL_PLACES = 6
MAX_PRICE = Decimal(1_000_000)
MAX_UNITS = 1_000_000
MAX_ID_LENGTH = 200
# Bound on (demand-curve length) x (arrays of that length the clearing computes): about 40 s on 2 cores.
MAX_WORK_CELLS = 200_000_000

_PRICE_TEXT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,40})?")
_ASK_FIELDS = ("id", "units", "cost")
_BID_FIELDS = ("id", "units", "value")
_MARKET_FIELDS = ("asks", "bids", "max_cost", "mechanism", "reference_price")
# The default keeps every round within budget; "vcg" is the pre-2026-12 mechanism, kept for research and old rounds.
TRADE_REDUCTION = "trade-reduction"
VCG = "vcg"
MECHANISMS = (TRADE_REDUCTION, VCG)


class MarketError(ValueError):
    """Reject a market that cannot be cleared as given; the message names the offending field."""


@dataclass(frozen=True)
class Ask:
    """A provider's offer: up to ``units`` vGPUs at a reserve price ``cost`` per vGPU-hour."""

    id: str
    units: int
    cost: Decimal


@dataclass(frozen=True)
class Bid:
    """A buyer's all-or-nothing request for ``units`` vGPUs at up to ``value`` per vGPU-hour."""

    id: str
    units: int
    value: Decimal


@dataclass(frozen=True)
class Market:
    """One round's asks and bids, the mechanism and its public parameters (ceiling, reference price)."""

    asks: tuple[Ask, ...]
    bids: tuple[Bid, ...]
    max_cost: Decimal | None = None
    mechanism: str = TRADE_REDUCTION
    reference_price: Decimal | None = None


@dataclass(frozen=True)
class BidResult:
    """What one bid gets: whether it won and its total payment per hour."""

    id: str
    won: bool
    payment: Decimal


@dataclass(frozen=True)
class AskResult:
    """What one ask gets: units sold and its payment per hour, split into VCG part and adjustment."""

    id: str
    units_sold: int
    vcg_payment: Decimal
    adjustment: Decimal
    payment: Decimal


@dataclass(frozen=True)
class Result:
    """The outcome of one round; ``budget`` is buyer payments minus provider payments."""

    social_surplus: Decimal
    bids: tuple[BidResult, ...]
    asks: tuple[AskResult, ...]
    budget: Decimal


def _shown(value: Any) -> str:
    """Render a rejected input value for an error message, on one short line."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _to_millionths(amount: Decimal, where: str) -> int:
    """Return ``amount`` in millionths, refusing anything not exact, negative or out of range."""
    if not isinstance(amount, Decimal):
        raise MarketError(f"{where} must be a Decimal, got {_shown(amount)}")
    if not amount.is_finite():
        raise MarketError(f"{where} must be a finite decimal, got {amount}")
    if amount < 0:
        raise MarketError(f"{where} must not be negative, got {amount}")
    if amount > MAX_PRICE:
        raise MarketError(f"{where} must be at most {MAX_PRICE}, got {amount}")
    _, digits, exponent = amount.as_tuple()
    coefficient = int("".join(map(str, digits)))
    shift = exponent + DECIMAL_PLACES
    if coefficient == 0:
        return 0
    if shift >= 0:
        return coefficient * 10**shift
    if coefficient % 10 ** min(-shift, len(digits)):
        raise MarketError(f"{where} has more than {DECIMAL_PLACES} decimal places, got {amount}")
    return coefficient // 10**-shift


def _parse_price(raw: Any, where: str) -> Decimal:
    """Return a JSON decimal string as a Decimal, or raise MarketError naming ``where``."""
    if not isinstance(raw, str):
        raise MarketError(f'{where} must be a decimal string such as "0.40", got {_shown(raw)}')
    if raw.startswith("-") and _PRICE_TEXT.fullmatch(raw[1:]):
        raise MarketError(f"{where} must not be negative, got {_shown(raw)}")
    if not _PRICE_TEXT.fullmatch(raw):
        raise MarketError(f'{where} must be a decimal string such as "0.40", got {_shown(raw)}')
    amount = Decimal(raw)
    _to_millionths(amount, where)
    return amount


def _field(entry: dict[str, Any], name: str, where: str) -> Any:
    """Return ``entry[name]`` or raise MarketError saying it is missing."""
    if name not in entry:
        raise MarketError(f"{where}.{name} is missing")
    return entry[name]


def _check_fields(entry: Any, allowed: Sequence[str], where: str) -> dict[str, Any]:
    """Return ``entry`` if it is an object with no fields beyond ``allowed``."""
    if not isinstance(entry, dict):
        raise MarketError(f"{where} must be an object, got {_shown(entry)}")
    for name in entry:
        if name not in allowed:
            raise MarketError(f"{where} has unknown field {_shown(name)}")
    return entry


def _entries(market: dict[str, Any], side: str) -> list[Any]:
    """Return the list under ``side`` or raise MarketError."""
    if side not in market:
        raise MarketError(f'market is missing "{side}"')
    entries = market[side]
    if not isinstance(entries, list):
        raise MarketError(f"{side} must be a list, got {_shown(entries)}")
    return entries


def parse_market(obj: Any) -> Market:
    """Validate a decoded JSON market and return it as a Market, or raise MarketError."""
    market = _check_fields(obj, _MARKET_FIELDS, "market")
    asks = []
    for n, entry in enumerate(_entries(market, "asks")):
        where = f"asks[{n}]"
        _check_fields(entry, _ASK_FIELDS, where)
        id_, units = _field(entry, "id", where), _field(entry, "units", where)
        asks.append(Ask(id_, units, _parse_price(_field(entry, "cost", where), f"{where}.cost")))
    bids = []
    for n, entry in enumerate(_entries(market, "bids")):
        where = f"bids[{n}]"
        _check_fields(entry, _BID_FIELDS, where)
        id_, units = _field(entry, "id", where), _field(entry, "units", where)
        bids.append(Bid(id_, units, _parse_price(_field(entry, "value", where), f"{where}.value")))
    raw_ceiling = market.get("max_cost")
    max_cost = None if raw_ceiling is None else _parse_price(raw_ceiling, "max_cost")
    raw_reference = market.get("reference_price")
    reference = None if raw_reference is None else _parse_price(raw_reference, "reference_price")
    mechanism = market.get("mechanism", TRADE_REDUCTION)
    parsed = Market(tuple(asks), tuple(bids), max_cost, mechanism, reference)
    _validate(parsed)
    return parsed


def _check_participant(id_: Any, units: Any, where: str, seen: dict[str, str]) -> None:
    """Check one participant's id and units, recording the id in ``seen``."""
    if not isinstance(id_, str) or not id_ or len(id_) > MAX_ID_LENGTH:
        raise MarketError(
            f"{where}.id must be a non-empty string of at most {MAX_ID_LENGTH} characters, got {_shown(id_)}"
        )
    if id_ in seen:
        raise MarketError(f"{where}.id {_shown(id_)} duplicates {seen[id_]}.id")
    seen[id_] = where
    if type(units) is not int or units < 1:
        raise MarketError(f"{where}.units must be a positive integer, got {_shown(units)}")
    if units > MAX_UNITS:
        raise MarketError(f"{where}.units must be at most {MAX_UNITS}, got {units}")


def _validate(market: Market) -> tuple[list[int], list[int], int | None, int | None]:
    """Check a market and return ask costs, bid values, the ceiling and the reference price in millionths."""
    if not isinstance(market.mechanism, str) or market.mechanism not in MECHANISMS:
        names = ", ".join(map(repr, MECHANISMS))
        raise MarketError(f"mechanism must be one of {names}, got {_shown(market.mechanism)}")
    seen: dict[str, str] = {}
    ceiling = None if market.max_cost is None else _to_millionths(market.max_cost, "max_cost")
    reference = None if market.reference_price is None else _to_millionths(market.reference_price, "reference_price")
    costs = []
    for n, ask in enumerate(market.asks):
        where = f"asks[{n}]"
        _check_participant(ask.id, ask.units, where, seen)
        costs.append(_to_millionths(ask.cost, f"{where}.cost"))
        if ceiling is not None and costs[-1] > ceiling:
            raise MarketError(f"{where}.cost {ask.cost} exceeds max_cost {market.max_cost}")
    values = []
    for n, bid in enumerate(market.bids):
        where = f"bids[{n}]"
        _check_participant(bid.id, bid.units, where, seen)
        values.append(_to_millionths(bid.value, f"{where}.value"))
    ask_units = [a.units for a in market.asks]
    bid_units = [b.units for b in market.bids]
    length, cost_length = curve_lengths(ask_units, bid_units)
    if max(costs + values, default=0) * (length + cost_length) >= MAX_MAGNITUDE:
        raise MarketError(f"market too large for exact 64-bit arithmetic: {length - 1} tradable units at these prices")
    bid_sizes = len({u for u in bid_units if u < length})
    # Each bid size is folded in about log2(sizes) + 2 times; each ask size adds one more array.
    arrays = bid_sizes * (2 + math.ceil(math.log2(max(bid_sizes, 1)))) + len(set(ask_units)) + 2
    if arrays * length > MAX_WORK_CELLS:
        raise MarketError(
            f"market too large: {length - 1} tradable units with {bid_sizes} distinct bid sizes "
            f"exceed the engine limit of {MAX_WORK_CELLS} cells"
        )
    return costs, values, ceiling, reference


def _amount(millionths: int) -> Decimal:
    """Return an integer number of millionths as an exact Decimal."""
    return Decimal(millionths).scaleb(-DECIMAL_PLACES)


def clear(
    asks: Sequence[Ask],
    bids: Sequence[Bid],
    *,
    max_cost: Decimal | None = None,
    mechanism: str = TRADE_REDUCTION,
    reference_price: Decimal | None = None,
) -> Result:
    """Allocate one round and price every participant; raise MarketError if the market is invalid.

    The default mechanism never pays providers more than buyers pay; ``reference_price`` is the
    pool's public price a thin round trades at. ``mechanism="vcg"`` gives plain VCG with the
    adjustment against the ceiling ``max_cost`` (docs/pricing.md explains both).
    """
    market = Market(tuple(asks), tuple(bids), max_cost, mechanism, reference_price)
    costs, values, ceiling, reference = _validate(market)
    ask_units = [a.units for a in market.asks]
    bid_units = [b.units for b in market.bids]
    if mechanism == VCG:
        outcome = clear_units(ask_units, costs, bid_units, values, ceiling)
        surplus, won, bid_paid, sold = outcome.surplus, outcome.won, outcome.bid_payments, outcome.units_sold
        vcg_paid = outcome.vcg_payments
        ask_paid = tuple(v + h for v, h in zip(outcome.vcg_payments, outcome.adjustments, strict=True))
    else:
        reduced = clear_reduced(ask_units, costs, bid_units, values, reference)
        surplus, won, bid_paid, sold = reduced.surplus, reduced.won, reduced.bid_payments, reduced.units_sold
        vcg_paid, ask_paid = reduced.vcg.vcg_payments, reduced.ask_payments
    bid_results = tuple(
        BidResult(bid.id, w, _amount(paid)) for bid, w, paid in zip(market.bids, won, bid_paid, strict=True)
    )
    ask_results = tuple(
        AskResult(ask.id, y, _amount(vcg), _amount(paid - vcg), _amount(paid))
        for ask, y, vcg, paid in zip(market.asks, sold, vcg_paid, ask_paid, strict=True)
    )
    budget = sum(bid_paid) - sum(ask_paid)
    return Result(_amount(surplus), bid_results, ask_results, _amount(budget))


def market_clear(market: Market) -> Result:
    """Clear a parsed Market with its own mechanism and parameters."""
    return clear(
        market.asks,
        market.bids,
        max_cost=market.max_cost,
        mechanism=market.mechanism,
        reference_price=market.reference_price,
    )


def format_amount(amount: Decimal) -> str:
    """Render an amount exactly: "0" for zero, otherwise at least two decimal places."""
    if amount == 0:
        return "0"
    text = f"{amount.quantize(Decimal(1).scaleb(-DECIMAL_PLACES)):f}"
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def result_to_json(result: Result) -> dict[str, Any]:
    """Return the command-line output object for a Result."""
    return {
        "social_surplus": format_amount(result.social_surplus),
        "bids": {b.id: {"won": b.won, "payment": format_amount(b.payment)} for b in result.bids},
        "asks": {
            a.id: {
                "units_sold": a.units_sold,
                "vcg_payment": format_amount(a.vcg_payment),
                "adjustment": format_amount(a.adjustment),
                "payment": format_amount(a.payment),
            }
            for a in result.asks
        },
        "budget": format_amount(result.budget),
    }
