"""The public DA copy lets anyone verify a batch but no longer lets anyone brute-force what a user moved."""

import hashlib
import json

import pytest
from django.urls import reverse

from ledger.chain.node import _embedded
from ledger.currencies import Currency
from ledger.merkle import StandardMerkleTree
from ledger.models import SettlementBatch, Transaction
from ledger.services import ledger_deposit, ledger_hold, ledger_release
from ledger.settlement.batches import LEAF_TYPES, settlement_batch_run
from ledger.settlement.commitments import fingerprint_of, transaction_commitment
from tests.factories import UserFactory
from tests.settlement.helpers import Market, link_wallet

USDC = 1_000_000
# What the attacker guesses: round amounts up to this many whole units, for every user id near the victims'.
GUESS_UNITS = 2_000


def brute_force(published: set[str], user_ids: range) -> set[tuple[str, int, int]]:
    """Return every (kind, user id, amount) whose deposit/hold/release fingerprint is among ``published``.

    This is the attack the previous DA format allowed: fingerprints were sha256 over the kind, currency
    and legs (internal user ids and exact amounts), so guessing small ids and round amounts finds them.
    """
    shapes = {
        "deposit": lambda u, a: [[0, "chain_clearing", -a], [u, "available", a]],
        "hold": lambda u, a: [[u, "available", -a], [u, "escrow", a]],
        "release": lambda u, a: [[u, "escrow", -a], [u, "available", a]],
    }
    found = set()
    for currency, unit in ((Currency.USDC, USDC), (Currency.JCT, 10**18)):
        for kind, legs in shapes.items():
            for user_id in user_ids:
                for units in range(1, GUESS_UNITS + 1):
                    amount = units * unit
                    if fingerprint_of(kind=kind, currency=currency, legs=legs(user_id, amount)) in published:
                        found.add((kind, user_id, amount))
    return found


@pytest.fixture
def client_for():
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def fresh_embedded_chain(settings):
    """Use a freshly deployed embedded in-process chain, and leave a fresh one to the next test."""
    settings.CHAIN_RPC_URL = ""
    _embedded.cache_clear()
    yield
    _embedded.cache_clear()


@pytest.fixture
def settled(db, fresh_embedded_chain):
    """Two users' round deposits, holds and a release, plus a charge that gives a provider earnings, in batch 1."""
    alice, bob = UserFactory(), UserFactory()
    ledger_deposit(user_id=alice.pk, currency=Currency.USDC, amount=1_500 * USDC, idempotency_key="p-dep-a")
    ledger_deposit(user_id=bob.pk, currency=Currency.USDC, amount=250 * USDC, idempotency_key="p-dep-b")
    ledger_hold(user_id=alice.pk, currency=Currency.USDC, amount=300 * USDC, idempotency_key="p-hold-a")
    ledger_release(user_id=alice.pk, currency=Currency.USDC, amount=100 * USDC, idempotency_key="p-rel-a")
    market = Market(buyer=bob, provider=UserFactory())
    link_wallet(market.provider, "0x" + "cd" * 20)
    market.charge(20 * USDC)
    batch = settlement_batch_run()
    assert batch is not None and batch.seq == 1 and batch.status == SettlementBatch.Status.POSTED
    return batch, alice, bob, market


def test_the_old_brute_force_recovers_deposits_from_unsalted_fingerprints_but_nothing_from_the_public_record(
    settled, anon_client
):
    batch, alice, bob, market = settled
    body = anon_client.get(reverse("settlement-data", args=[batch.data_id])).content
    record = json.loads(body)
    covered = Transaction.objects.filter(pk__gte=batch.first_transaction_id, pk__lte=batch.last_transaction_id)
    ids = sorted({alice.pk, bob.pk, market.provider.pk})
    suspects = range(max(1, ids[0] - 3), ids[-1] + 4)

    # Control: what the previous format published (the ledger's own fingerprints) gives the amounts away.
    unsalted = set(covered.values_list("fingerprint", flat=True))
    recovered = brute_force(unsalted, suspects)
    assert {("deposit", alice.pk, 1_500 * USDC), ("deposit", bob.pk, 250 * USDC)} <= recovered
    assert {("hold", alice.pk, 300 * USDC), ("release", alice.pk, 100 * USDC)} <= recovered

    # The public record: the same attack over everything it publishes finds nothing.
    items = record["ledger_transactions"]["items"]
    assert record["ledger_transactions"]["fields"] == ["id", "commitment"]
    published = {value for item in items for value in item if isinstance(value, str)}
    assert brute_force(published, suspects) == set()
    # No fingerprint, kind or user id is in the record; the ids listed are the covered ones, in order.
    assert not any(fingerprint in body.decode() for fingerprint in unsalted)
    assert [item[0] for item in items] == list(covered.order_by("pk").values_list("pk", flat=True))
    assert all(len(item) == 2 for item in items)
    # The batch's commitment key appears nowhere public.
    batches = anon_client.get(reverse("settlement-batches")).content.decode()
    assert batch.commitment_key and batch.commitment_key not in body.decode() + batches


def test_anyone_can_still_recompute_the_data_hash_and_the_root_from_the_public_record(settled, anon_client):
    batch, *_ = settled
    body = anon_client.get(reverse("settlement-data", args=["0x" + batch.data_id])).content
    record = json.loads(body)

    assert hashlib.sha256(body).hexdigest() == batch.data_id
    assert StandardMerkleTree.of(record["leaves"], LEAF_TYPES).root == record["root"] == batch.root
    assert record["version"] == 4 and record["seq"] == 1


def test_a_party_gets_the_salt_and_legs_and_finds_the_commitment_in_the_batch(settled, client_for, anon_client):
    batch, alice = settled[0], settled[1]
    deposit = Transaction.objects.get(idempotency_key="p-dep-a")

    reveal = client_for(alice).get(reverse("settlement-transaction", args=[deposit.pk]))

    assert reveal.status_code == 200
    data = reveal.json()
    assert data["legs"] == [[0, "chain_clearing", -1_500 * USDC], [alice.pk, "available", 1_500 * USDC]]
    fingerprint = fingerprint_of(kind=data["kind"], currency=data["currency"], legs=data["legs"])
    assert fingerprint == data["fingerprint"] == deposit.fingerprint
    commitment = transaction_commitment(salt=data["salt"], fingerprint=fingerprint)
    body = anon_client.get(reverse("settlement-data", args=[data["data_hash"]])).content
    assert hashlib.sha256(body).hexdigest() == data["data_hash"][2:] == batch.data_id
    assert [deposit.pk, commitment] in json.loads(body)["ledger_transactions"]["items"]
    # Salts differ per transaction: one revealed salt says nothing about the others.
    hold = Transaction.objects.get(idempotency_key="p-hold-a")
    other = client_for(alice).get(reverse("settlement-transaction", args=[hold.pk])).json()
    assert other["salt"] != data["salt"]


def test_nobody_else_gets_a_salt(settled, client_for, anon_client):
    alice, market = settled[1], settled[3]
    deposit = Transaction.objects.get(idempotency_key="p-dep-a")

    stranger = client_for(UserFactory()).get(reverse("settlement-transaction", args=[deposit.pk]))
    counterparty_of_other = client_for(market.provider).get(reverse("settlement-transaction", args=[deposit.pk]))
    anonymous = anon_client.get(reverse("settlement-transaction", args=[deposit.pk]))
    missing = client_for(alice).get(reverse("settlement-transaction", args=[10**12]))
    huge = client_for(alice).get(reverse("settlement-transaction", args=[10**30]))

    for response in (stranger, counterparty_of_other, missing, huge):
        assert response.status_code == 404 and response.json()["code"] == "transaction_not_settled"
    assert anonymous.status_code in (401, 403)


def test_a_transaction_not_yet_in_a_batch_has_no_salt_to_give(settled, client_for):
    _, alice, *_ = settled
    later = ledger_deposit(user_id=alice.pk, currency=Currency.USDC, amount=5 * USDC, idempotency_key="p-late")

    response = client_for(alice).get(reverse("settlement-transaction", args=[later.transaction.pk]))

    assert response.status_code == 404 and response.json()["code"] == "transaction_not_settled"
