"""Pricing reads: the market view of every pool."""

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from ledger.currencies import USDC_SCALE
from nodes.selectors import pools_with_supply
from pricing.models import Bid, BidState, MarketRound
from pricing.services import pool_default_ask


@dataclass(frozen=True)
class PoolMarket:
    name: str
    architecture: str
    memory_gib: int
    vgpus_total: int
    vgpus_free: int
    vgpus_busy: int
    demand_units: int
    last_round_id: int | None
    last_round_at: object
    last_buyer_price: Decimal | None  # USDC per vGPU-hour, averaged over the units traded
    last_provider_price: Decimal | None
    reference_price: Decimal  # USDC per vGPU-hour: the pool's default ask, the price when every node sells


def _per_unit(total: int, units: int) -> Decimal | None:
    if not units:
        return None
    return (Decimal(total) / Decimal(USDC_SCALE) / units).quantize(Decimal("0.000001"))


def pool_markets() -> list[PoolMarket]:
    """Return every pool with its supply, waiting demand and the prices of its last round that traded."""
    demand = dict(
        Bid.objects.filter(state=BidState.PENDING)
        .values("pool_id")
        .annotate(units=Sum("units"))
        .values_list("pool_id", "units")
    )
    markets = []
    for pool in pools_with_supply():
        last = MarketRound.objects.filter(pool=pool, units_traded__gt=0).order_by("-created_at", "-pk").first()
        markets.append(
            PoolMarket(
                name=pool.name,
                architecture=pool.architecture,
                memory_gib=pool.memory_gib,
                vgpus_total=pool.vgpus_total,
                vgpus_free=pool.vgpus_free,
                vgpus_busy=pool.vgpus_busy,
                demand_units=demand.get(pool.pk, 0),
                last_round_id=last and last.pk,
                last_round_at=last and last.created_at,
                last_buyer_price=last and _per_unit(last.buyer_payments_per_hour, last.units_traded),
                last_provider_price=last and _per_unit(last.provider_payments_per_hour, last.units_traded),
                reference_price=_per_unit(pool_default_ask(pool_name=pool.name), 1),
            )
        )
    return markets
