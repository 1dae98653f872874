"""The platform market account for operators: balance over time, income, outflows and the low-balance alert.

Every charge's residual (what the buyer paid less what the provider was paid; the platform fee is taken out of
the provider's side and booked to `fees`) lands on the platform `market` account in USDC. Under the default
mechanism it is 0 per round; old VCG rounds drew on it. This module reads both accounts.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db.models import Count, Q

from ledger.currencies import USDC_SCALE, Currency, to_base_units
from ledger.models import Account, AccountKind, Entry
from pricing.models import MarketRound

# At most this many days of history on the page and in the API.
MAX_DAYS = 90


@dataclass(frozen=True)
class Day:
    """One day of the market account: what came in, what went out, and the balance at the day's end."""

    day: date
    income: int
    outflows: int
    balance: int


@dataclass(frozen=True)
class MarketAccount:
    """The market account's state for operators, in USDC base units."""

    balance: int
    fees_balance: int
    income: int  # every credit to the market account: round surpluses
    outflows: int  # every debit: rounds that paid providers more than their buyers paid (VCG rounds)
    lowest_balance: int
    lowest_at: datetime | None
    threshold: int
    alert: bool
    days: list[Day]
    rounds: int
    rounds_in_deficit: int


def _platform_account(kind: str) -> Account | None:
    return Account.objects.filter(owner__isnull=True, kind=kind, currency=Currency.USDC).first()


def market_account_threshold() -> int:
    """Return the alert threshold in USDC base units (PRICING_MARKET_ACCOUNT_ALERT_USDC, may be negative)."""
    text = str(settings.PRICING_MARKET_ACCOUNT_ALERT_USDC).strip()
    negative = text.startswith("-")
    amount = to_base_units(text.lstrip("-"), Currency.USDC, allow_zero=True)
    return -amount if negative else amount


def market_account_summary() -> MarketAccount:
    """Return the market account's balance, history, income, outflows and whether it ever fell below the threshold."""
    market = _platform_account(AccountKind.MARKET)
    fees = _platform_account(AccountKind.FEES)
    threshold = market_account_threshold()
    income = outflows = 0
    lowest, lowest_at = 0, None
    by_day: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    running = 0
    if market is not None:
        entries = Entry.objects.filter(account=market).order_by("created_at", "pk").values_list("created_at", "amount")
        # The running balance must be replayed entry by entry to find the lowest point it ever reached.
        for created_at, amount in entries.iterator(chunk_size=5_000):
            running += amount
            bucket = by_day[created_at.date()]
            if amount > 0:
                income += amount
                bucket[0] += amount
            else:
                outflows -= amount
                bucket[1] -= amount
            if running < lowest:
                lowest, lowest_at = running, created_at
    days = []
    balance = 0
    for day in sorted(by_day):
        day_income, day_out = by_day[day]
        balance += day_income - day_out
        days.append(Day(day=day, income=day_income, outflows=day_out, balance=balance))
    rounds = MarketRound.objects.aggregate(total=Count("pk"), deficit=Count("pk", filter=Q(budget_per_hour__lt=0)))
    current = market.balance if market is not None else 0
    return MarketAccount(
        balance=current,
        fees_balance=fees.balance if fees is not None else 0,
        income=income,
        outflows=outflows,
        lowest_balance=lowest,
        lowest_at=lowest_at,
        threshold=threshold,
        alert=min(lowest, current) < threshold,
        days=days[-MAX_DAYS:],
        rounds=rounds["total"] or 0,
        rounds_in_deficit=rounds["deficit"] or 0,
    )


def market_account_alert_text(summary: MarketAccount) -> str:
    """Return the one-line alert operators see, or "" when the account never fell below the threshold."""
    if not summary.alert:
        return ""
    when = f" on {summary.lowest_at:%Y-%m-%d %H:%M} UTC" if summary.lowest_at else ""
    return (
        f"The market account fell to {summary.lowest_balance / USDC_SCALE:.6f} USDC{when}, below the alert threshold "
        f"of {summary.threshold / USDC_SCALE:.6f} USDC (now {summary.balance / USDC_SCALE:.6f}): "
        "some round or charge paid providers more than buyers paid; check the rounds with a negative budget."
    )
