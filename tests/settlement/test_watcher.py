"""The chain watcher against Hardhat: confirmations, exactly-once credits, unknown wallets, stake."""

import pytest

from ledger.currencies import Currency
from ledger.models import AccountKind, ChainCursor, ChainDeposit, StakeEvent, Transaction
from ledger.services import ledger_account_get
from ledger.settlement import connection as settlement_connection
from ledger.tasks import chain_watch_scan_task
from ledger.watcher import chain_watch_scan
from tests.factories import UserFactory
from tests.settlement.helpers import CONFIRMATIONS, link_wallet, mine


def deposit(chain, account, token, amount):
    chain.mint(token, account.address, amount)
    chain.send(account, token.functions.approve(chain.settlement.address, amount))
    return chain.send(account, chain.settlement.functions.deposit(token.address, amount))


def available(user, currency=Currency.USDC) -> int:
    return int(ledger_account_get(user_id=user.pk, kind=AccountKind.AVAILABLE, currency=currency).balance)


@pytest.fixture
def depositor(db, live):
    user = UserFactory()
    link_wallet(user, live.bob.address)
    return user


def test_a_deposit_is_credited_only_after_the_confirmations(depositor, live):
    deposit(live, live.bob, live.usdc, 25_000_000)

    assert chain_watch_scan().credited == 0
    mine(live, CONFIRMATIONS - 1)
    assert chain_watch_scan().credited == 0
    assert available(depositor) == 0

    mine(live, 1)
    assert chain_watch_scan().credited == 1
    assert available(depositor) == 25_000_000


def test_a_deposit_is_credited_once_across_rescans_and_a_restart(depositor, live):
    receipt = deposit(live, live.bob, live.usdc, 3_000_000)
    deposit(live, live.bob, live.jct, 2 * 10**18)
    mine(live, CONFIRMATIONS)

    assert chain_watch_scan().credited == 2
    assert chain_watch_scan().credited == 0
    # A restart that lost its cursor and its connection re-scans everything from the start block.
    ChainCursor.objects.update(last_block=-1)
    settlement_connection._connections.clear()
    assert chain_watch_scan_task.apply().get()["credited"] == 0

    assert available(depositor) == 3_000_000
    assert available(depositor, Currency.JCT) == 2 * 10**18
    assert ChainDeposit.objects.count() == 2
    usdc = ChainDeposit.objects.get(currency=Currency.USDC)
    assert usdc.tx_hash == receipt["transactionHash"].to_0x_hex()
    assert Transaction.objects.filter(idempotency_key__startswith="chain:").count() == 2


def test_a_deposit_from_an_unknown_wallet_waits_until_the_wallet_is_linked(db, live):
    deposit(live, live.carol, live.usdc, 9_000_000)
    mine(live, CONFIRMATIONS)

    assert chain_watch_scan().credited == 0
    unmatched = ChainDeposit.objects.get()
    assert unmatched.user is None and unmatched.ledger_transaction is None

    latecomer = UserFactory()
    link_wallet(latecomer, live.carol.address)
    assert chain_watch_scan().credited == 1
    assert chain_watch_scan().credited == 0

    assert available(latecomer) == 9_000_000
    unmatched.refresh_from_db()
    assert unmatched.user == latecomer and unmatched.credited_at is not None


def test_stake_changes_are_recorded(depositor, live):
    live.mint(live.jct, live.bob.address, 10 * 10**18)
    live.send(live.bob, live.jct.functions.approve(live.settlement.address, 10 * 10**18))
    live.send(live.bob, live.settlement.functions.stake(10 * 10**18))
    live.send(live.bob, live.settlement.functions.requestUnstake(4 * 10**18))
    mine(live, CONFIRMATIONS)

    chain_watch_scan()
    chain_watch_scan()

    events = list(StakeEvent.objects.order_by("block_number").values_list("kind", "account", "amount"))
    assert events == [
        (StakeEvent.Kind.STAKED, live.bob.address, 10 * 10**18),
        (StakeEvent.Kind.UNSTAKE_REQUESTED, live.bob.address, 4 * 10**18),
    ]
    unlock = StakeEvent.objects.get(kind=StakeEvent.Kind.UNSTAKE_REQUESTED).unlock_at
    pending = live.settlement.functions.pendingUnstakeOf(live.bob.address).call()
    assert int(unlock.timestamp()) == pending[1]
