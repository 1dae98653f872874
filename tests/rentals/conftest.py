"""Rentals test fixtures: funded buyers, online nodes, rounds, agent reports written as the gateway writes them."""

from __future__ import annotations

import itertools

import pytest
from django.db.models import Sum

from ledger.models import Account, Entry
from ledger.services import ledger_deposit
from marketplace.rentals.dispatch import rentals_sync
from marketplace.rentals.models import Rental, RentalPlacement
from marketplace.rentals.services import rental_submit
from nodes.models import NodePlacement, UsageReport
from pricing.services import market_round_run
from tests.factories import UserFactory, online_node

USDC = 1_000_000
_keys = itertools.count(1)


@pytest.fixture(autouse=True)
def _reference_price(settings):
    """Rentals tests price their lone-node rounds at the pool reference 0.50 USDC per vGPU-hour."""
    settings.PRICING_DEFAULT_ASK = "0.50"


@pytest.fixture
def provider(db):
    return UserFactory()


@pytest.fixture
def buyer(db):
    """A buyer with 1,000 USDC available."""
    user = UserFactory()
    fund(user, 1_000 * USDC)
    return user


def fund(user, amount: int) -> None:
    """Deposit `amount` USDC base units into a user's available balance."""
    ledger_deposit(user_id=user.pk, currency="USDC", amount=amount, idempotency_key=f"test-fund-{next(_keys)}")


def balance(user, kind: str) -> int:
    """Return a user's USDC balance of one account kind."""
    account = Account.objects.filter(owner=user, kind=kind, currency="USDC").first()
    return int(account.balance) if account else 0


def platform_balance(kind: str) -> int:
    account = Account.objects.filter(owner__isnull=True, kind=kind, currency="USDC").first()
    return int(account.balance) if account else 0


def ledger_total() -> int:
    """Return the sum of every USDC entry (zero when the books balance)."""
    return int(Entry.objects.filter(currency="USDC").aggregate(total=Sum("amount"))["total"] or 0)


def submit(buyer, **overrides) -> Rental:
    """Submit a rental through the service with sensible defaults."""
    fields = {
        "pool_name": "ada-12g",
        "vgpus": 1,
        "max_price_per_hour": "2",
        "max_duration_seconds": 3600,
        "image": "docker.io/library/busybox:1.36",
        "command": ["sh", "-c", "echo hi"],
    }
    fields.update(overrides)
    return rental_submit(owner=buyer, **fields)


def run_round(rental: Rental) -> Rental:
    """Clear a round of the rental's pool (the receiver allocates and dispatches) and return it fresh."""
    market_round_run(pool_id=rental.pool_id)
    rental.refresh_from_db()
    return rental


def report_state(placement: RentalPlacement, state: str, exit_code: int | None = None, message: str = "") -> None:
    """Write a placement status as the gateway does."""
    NodePlacement.objects.filter(pk=placement.node_placement_id).update(
        state=state, exit_code=exit_code, message=message
    )


def report_usage(placement: RentalPlacement, seq: int, start_ms: int, end_ms: int) -> UsageReport:
    """Store a (verified) usage report as the gateway does."""
    return UsageReport.objects.create(
        placement_id=placement.node_placement_id,
        seq=seq,
        interval_start_ms=start_ms,
        interval_end_ms=end_ms,
        vgpu_count=placement.vgpu_count,
        vgpu_milliseconds=placement.vgpu_count * (end_ms - start_ms),
        signature=b"test",
    )


def sync() -> None:
    rentals_sync()


@pytest.fixture
def node(provider):
    """An online node with two free vGPUs of ada-12g, reserve price 0.50 USDC per vGPU-hour."""
    return online_node(provider, name="rig", vgpus=2, price=500_000)
