"""Ledger services on the test database: balances, idempotency, errors, the bulk path."""

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum

from ledger.errors import IdempotencyKeyReused, InsufficientFunds, InvalidAmount, UnbalancedTransaction
from ledger.models import Account, AccountKind, Entry, Transaction
from ledger.services import (
    Leg,
    Posting,
    charge_posting,
    ledger_account_get,
    ledger_charge,
    ledger_deposit,
    ledger_hold,
    ledger_post,
    ledger_post_bulk,
    ledger_release,
    ledger_transfer,
)
from tests.factories import UserFactory

USDC = "USDC"


def balance(user, kind, currency=USDC):
    return int(ledger_account_get(user_id=user and user.pk, kind=kind, currency=currency).balance)


@pytest.fixture
def buyer(db):
    user = UserFactory()
    ledger_deposit(user_id=user.pk, currency=USDC, amount=100_000_000, idempotency_key=f"seed-{user.pk}")
    return user


@pytest.fixture
def provider(db):
    return UserFactory()


def test_deposit_credits_available_from_chain_clearing(buyer):
    assert balance(buyer, AccountKind.AVAILABLE) == 100_000_000
    assert balance(None, AccountKind.CHAIN_CLEARING) == -100_000_000


def test_hold_charge_release_move_money_and_sum_to_zero(buyer, provider, settings):
    settings.JANCTION_PLATFORM_FEE_BPS = 500
    ledger_hold(user_id=buyer.pk, currency=USDC, amount=10_000_000, idempotency_key="hold-1")
    ledger_charge(
        buyer_id=buyer.pk, provider_id=provider.pk, currency=USDC, buyer_amount=4_000_000, idempotency_key="charge-1"
    )
    ledger_release(user_id=buyer.pk, currency=USDC, amount=6_000_000, idempotency_key="release-1")
    assert balance(buyer, AccountKind.AVAILABLE) == 96_000_000
    assert balance(buyer, AccountKind.ESCROW) == 0
    assert balance(provider, AccountKind.EARNINGS) == 3_800_000
    assert balance(None, AccountKind.FEES) == 200_000
    for txn in Transaction.objects.all():
        assert sum(int(e.amount) for e in txn.entries.all()) == 0
    assert int(Account.objects.aggregate(total=Sum("balance"))["total"]) == 0


def test_charge_sends_the_round_residual_to_the_market_account(buyer, provider, settings):
    settings.JANCTION_PLATFORM_FEE_BPS = 500
    ledger_hold(user_id=buyer.pk, currency=USDC, amount=1_000_000, idempotency_key="hold")
    ledger_charge(
        buyer_id=buyer.pk,
        provider_id=provider.pk,
        currency=USDC,
        buyer_amount=1_000_000,
        provider_amount=1_100_000,  # a PVCG subsidy: the provider earns more than the buyer pays
        idempotency_key="charge",
    )
    assert balance(provider, AccountKind.EARNINGS) == 1_100_000
    assert balance(None, AccountKind.FEES) == 50_000
    assert balance(None, AccountKind.MARKET) == -150_000


def test_overdraft_is_refused_and_leaves_nothing_behind(buyer):
    before = Transaction.objects.count()
    with pytest.raises(InsufficientFunds, match="Not enough USDC in your available balance"):
        ledger_hold(user_id=buyer.pk, currency=USDC, amount=100_000_001, idempotency_key="too-much")
    assert Transaction.objects.count() == before
    assert balance(buyer, AccountKind.AVAILABLE) == 100_000_000
    assert not Transaction.objects.filter(idempotency_key="too-much").exists()


def test_database_refuses_a_negative_user_balance_even_without_python(buyer):
    account = ledger_account_get(user_id=buyer.pk, kind=AccountKind.AVAILABLE, currency=USDC)
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(pk=account.pk).update(balance=-1)


def test_same_key_same_posting_is_a_replay(buyer):
    first = ledger_hold(user_id=buyer.pk, currency=USDC, amount=5, idempotency_key="k")
    second = ledger_hold(user_id=buyer.pk, currency=USDC, amount=5, idempotency_key="k")
    assert first.created and not second.created
    assert first.transaction.pk == second.transaction.pk
    assert balance(buyer, AccountKind.ESCROW) == 5


def test_same_key_different_posting_is_refused(buyer):
    ledger_hold(user_id=buyer.pk, currency=USDC, amount=5, idempotency_key="k")
    with pytest.raises(IdempotencyKeyReused):
        ledger_hold(user_id=buyer.pk, currency=USDC, amount=6, idempotency_key="k")
    assert balance(buyer, AccountKind.ESCROW) == 5


@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "10"])
def test_non_positive_or_non_integer_amounts_are_refused(buyer, amount):
    with pytest.raises(InvalidAmount):
        ledger_transfer(from_user_id=buyer.pk, to_user_id=buyer.pk, currency=USDC, amount=amount, idempotency_key="x")


def test_unbalanced_posting_is_refused(buyer):
    with pytest.raises(UnbalancedTransaction):
        ledger_post(
            Posting(
                kind="transfer",
                currency=USDC,
                idempotency_key="u",
                legs=(Leg(buyer.pk, AccountKind.AVAILABLE, -5), Leg(buyer.pk, AccountKind.ESCROW, 4)),
            )
        )


def test_platform_kinds_need_no_owner_and_user_kinds_need_one(buyer):
    with pytest.raises(InvalidAmount, match="a user has no 'fees' account"):
        ledger_post(
            Posting(
                kind="transfer",
                currency=USDC,
                idempotency_key="c",
                legs=(Leg(buyer.pk, AccountKind.AVAILABLE, -5), Leg(buyer.pk, AccountKind.FEES, 5)),
            )
        )
    with pytest.raises(InvalidAmount, match="the platform has no 'escrow' account"):
        ledger_post(
            Posting(
                kind="transfer",
                currency=USDC,
                idempotency_key="d",
                legs=(Leg(buyer.pk, AccountKind.AVAILABLE, -5), Leg(None, AccountKind.ESCROW, 5)),
            )
        )
    assert balance(buyer, AccountKind.AVAILABLE) == 100_000_000
    assert not Transaction.objects.filter(idempotency_key__in=["c", "d"]).exists()


def test_bulk_path_posts_many_charges_in_one_transaction_and_skips_replays(buyer, provider):
    ledger_hold(user_id=buyer.pk, currency=USDC, amount=50_000_000, idempotency_key="hold")
    postings = [
        charge_posting(
            buyer_id=buyer.pk, provider_id=provider.pk, currency=USDC, buyer_amount=1_000, idempotency_key=f"bulk-{i}"
        )
        for i in range(500)
    ]
    assert ledger_post_bulk(postings[:200]).posted == 200
    result = ledger_post_bulk(postings)
    assert (result.posted, result.replayed) == (300, 200)
    assert balance(buyer, AccountKind.ESCROW) == 50_000_000 - 500 * 1_000
    assert Entry.objects.filter(transaction__idempotency_key__startswith="bulk-").count() == 500 * 3


def test_bulk_path_is_all_or_nothing(buyer, provider):
    ledger_hold(user_id=buyer.pk, currency=USDC, amount=1_500, idempotency_key="hold")
    postings = [
        charge_posting(
            buyer_id=buyer.pk, provider_id=provider.pk, currency=USDC, buyer_amount=1_000, idempotency_key=f"b-{i}"
        )
        for i in range(2)
    ]
    with pytest.raises(InsufficientFunds):
        ledger_post_bulk(postings)
    assert not Transaction.objects.filter(idempotency_key__startswith="b-").exists()
    assert balance(buyer, AccountKind.ESCROW) == 1_500


def test_bulk_path_refuses_a_key_repeated_inside_the_batch(buyer, provider):
    posting = charge_posting(
        buyer_id=buyer.pk, provider_id=provider.pk, currency=USDC, buyer_amount=1, idempotency_key="dup"
    )
    with pytest.raises(InvalidAmount, match="repeats an idempotency key"):
        ledger_post_bulk([posting, posting])
