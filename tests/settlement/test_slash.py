"""slash_onchain against Hardhat: the slasher key, idempotency by evidence, bad input, and the watcher's record."""

import hashlib
import os
import threading

import pytest
from django.db import connections

from ledger.chain.client import send
from ledger.models import ChainClaim, SettlementAlert, StakeEvent
from ledger.settlement.connection import chain_connection_get
from ledger.settlement.errors import InvalidSlash, SlashingNotConfigured, SlashRefused, StakeInsufficient
from ledger.settlement.selectors import stake_for_user
from ledger.settlement.stakes import slash_onchain, stake_onchain
from ledger.watcher import chain_watch_scan
from tests.factories import UserFactory
from tests.settlement.helpers import CONFIRMATIONS, link_wallet, mine

JCT = 10**18
EVIDENCE = hashlib.sha256(b"dispute:1").digest()


@pytest.fixture
def slashing(settings, live):
    settings.CHAIN_SLASHER_KEY = live.slasher.key.to_0x_hex()
    return live


@pytest.fixture
def staker(db, slashing):
    user = UserFactory()
    link_wallet(user, slashing.bob.address)
    slashing.mint(slashing.jct, slashing.bob.address, 10 * JCT)
    slashing.send(slashing.bob, slashing.jct.functions.approve(slashing.settlement.address, 10 * JCT))
    slashing.send(slashing.bob, slashing.settlement.functions.stake(10 * JCT))
    return user


def test_a_slash_is_sent_by_the_slasher_key_and_the_watcher_records_it_after_confirmations(staker, slashing):
    bob = slashing.bob.address
    slashing.send(slashing.bob, slashing.settlement.functions.requestUnstake(6 * JCT))

    tx_hash = slash_onchain(account=bob.lower(), amount=5 * JCT, evidence=EVIDENCE)

    receipt = slashing.w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1 and receipt["from"] == slashing.slasher.address
    assert stake_onchain(account=bob) == (0, 5 * JCT)
    assert slashing.jct.functions.balanceOf(slashing.admin.address).call() == 5 * JCT  # the treasury
    chain_watch_scan()
    assert not StakeEvent.objects.filter(kind=StakeEvent.Kind.SLASHED).exists()  # not confirmed yet

    mine(slashing, CONFIRMATIONS)
    chain_watch_scan()
    chain_watch_scan()

    slash = StakeEvent.objects.get(kind=StakeEvent.Kind.SLASHED)
    assert (slash.account, slash.amount, slash.from_pending) == (bob, 5 * JCT, JCT)
    assert slash.tx_hash == tx_hash and slash.evidence == "0x" + EVIDENCE.hex()
    [position] = stake_for_user(user_id=staker.pk)
    assert position["staked_amount"] == "0" and position["pending_unstake_amount"] == str(5 * JCT)
    # The slash's JCT transfer to the treasury is not a claim.
    assert not ChainClaim.objects.exists()
    assert not SettlementAlert.objects.exists()


def test_slashing_again_with_the_same_evidence_returns_the_first_slash(staker, slashing):
    first = slash_onchain(account=slashing.bob.address, amount=2 * JCT, evidence=EVIDENCE)

    again = slash_onchain(account=slashing.bob.address, amount=2 * JCT, evidence=EVIDENCE)

    assert again == first
    assert stake_onchain(account=slashing.bob.address) == (8 * JCT, 0)


def test_a_slash_beyond_the_stake_is_refused_with_the_stake(staker, slashing):
    with pytest.raises(StakeInsufficient) as excinfo:
        slash_onchain(account=slashing.bob.address, amount=10 * JCT + 1, evidence=EVIDENCE)

    assert excinfo.value.detail == {"staked": str(10 * JCT), "requested": str(10 * JCT + 1)}
    assert stake_onchain(account=slashing.bob.address) == (10 * JCT, 0)


@pytest.mark.parametrize(
    ("account", "amount", "evidence", "field"),
    [
        ("0x1234", JCT, EVIDENCE, "account"),
        (None, JCT, EVIDENCE, "account"),
        ("BOB", 0, EVIDENCE, "amount"),
        ("BOB", -1, EVIDENCE, "amount"),
        ("BOB", 2**256, EVIDENCE, "amount"),
        ("BOB", True, EVIDENCE, "amount"),
        ("BOB", "1", EVIDENCE, "amount"),
        ("BOB", JCT, EVIDENCE[:31], "evidence"),
        ("BOB", JCT, bytes(32), "evidence"),
        ("BOB", JCT, EVIDENCE.hex(), "evidence"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(staker, slashing, account, amount, evidence, field):
    block = slashing.w3.eth.block_number

    with pytest.raises(InvalidSlash) as excinfo:
        slash_onchain(account=slashing.bob.address if account == "BOB" else account, amount=amount, evidence=evidence)

    assert excinfo.value.detail == {"field": field} and excinfo.value.status == 400
    assert slashing.w3.eth.block_number == block


def test_the_operator_key_cannot_slash(staker, slashing, settings):
    settings.CHAIN_SLASHER_KEY = slashing.operator.key.to_0x_hex()

    with pytest.raises(SlashRefused, match="AccessControlUnauthorizedAccount"):
        slash_onchain(account=slashing.bob.address, amount=JCT, evidence=EVIDENCE)

    assert stake_onchain(account=slashing.bob.address) == (10 * JCT, 0)


def test_real_mode_without_a_slasher_key_refuses(staker, slashing, settings):
    settings.CHAIN_SLASHER_KEY = ""

    with pytest.raises(SlashingNotConfigured):
        slash_onchain(account=slashing.bob.address, amount=JCT, evidence=EVIDENCE)


def test_the_embedded_chain_has_its_own_slasher_key(db, settings):
    settings.CHAIN_RPC_URL = ""
    conn = chain_connection_get()
    staker = conn.operator  # has ether and mints JCT on the embedded chain
    for call in (
        conn.jct.functions.mint(staker.address, 3 * JCT),
        conn.jct.functions.approve(conn.settlement.address, 3 * JCT),
        conn.settlement.functions.stake(3 * JCT),
    ):
        send(conn.w3, staker, call)
    before = stake_onchain(account=staker.address)

    tx_hash = slash_onchain(account=staker.address, amount=JCT, evidence=hashlib.sha256(os.urandom(16)).digest())

    assert conn.slasher is not None and conn.slasher.address != conn.operator.address
    assert conn.w3.eth.get_transaction_receipt(tx_hash)["from"] == conn.slasher.address
    assert stake_onchain(account=staker.address) == (before[0] - JCT, before[1])


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_slashes_for_one_evidence_take_the_stake_once(staker, slashing):
    results: list[str] = []
    errors: list[Exception] = []

    def slash_once():
        try:
            results.append(slash_onchain(account=slashing.bob.address, amount=3 * JCT, evidence=EVIDENCE))
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=slash_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [] and len(results) == 2 and results[0] == results[1]
    assert stake_onchain(account=slashing.bob.address) == (7 * JCT, 0)
