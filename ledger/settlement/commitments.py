"""Salted commitments to ledger transactions: what a batch's public DA copy publishes instead of fingerprints.

A transaction's fingerprint is sha256 of its kind, currency and sorted legs (internal user ids and exact
amounts). Published as is, it can be brute-forced: user ids are small integers and deposits round numbers.
The DA copy therefore publishes ``sha256(salt ":" fingerprint)``, where the salt is HMAC-SHA256 of the
transaction id under a random 256-bit key kept with the batch and never published. Nobody can test a guess
without the salt; the parties of a transaction get its salt and legs from the API and can check that the
batch committed to exactly what they were told.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from ledger.models import Entry, SettlementBatch, Transaction
from ledger.settlement.errors import TransactionNotSettled

COMMITMENT_SCHEME = "sha256(salt ':' sha256_of_kind_currency_and_legs); salt revealed to the transaction's parties"


def commitment_key_new() -> str:
    """Return a fresh random batch commitment key (64 hex digits)."""
    return secrets.token_hex(32)


def transaction_salt(*, key: str, transaction_id: int) -> str:
    """Return the salt of one transaction under a batch's commitment key (64 hex digits)."""
    message = f"janction-ledger-salt:{transaction_id}".encode()
    return hmac.new(bytes.fromhex(key), message, hashlib.sha256).hexdigest()


def transaction_commitment(*, salt: str, fingerprint: str) -> str:
    """Return the published commitment to a transaction's fingerprint."""
    return hashlib.sha256(f"{salt}:{fingerprint}".encode()).hexdigest()


def fingerprint_of(*, kind: str, currency: str, legs: list[list[Any]]) -> str:
    """Return the ledger's fingerprint of a posting: sha256 of [kind, currency, sorted legs] as compact JSON."""
    ordered = sorted((int(owner), str(account_kind), int(amount)) for owner, account_kind, amount in legs)
    payload = json.dumps([kind, currency, [list(leg) for leg in ordered]], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def batch_commitments(*, key: str, rows: list[tuple[int, str]]) -> list[list[Any]]:
    """Return ``[id, commitment]`` for each ``(id, fingerprint)`` row.

    The same HMAC-SHA256 as transaction_salt (RFC 2104: ``H(key ^ opad || H(key ^ ipad || message))``), with
    both padded-key blocks hashed once per batch and each hash state copied per transaction (a 100,000-transaction
    batch would otherwise set the key up 100,000 times; hmac's own copy() costs a Python object per call).
    """
    sha256 = hashlib.sha256
    block = bytes.fromhex(key)
    if len(block) > 64:  # pragma: no cover - keys are 32 bytes; HMAC hashes a key longer than the block
        block = sha256(block).digest()
    block = block.ljust(64, b"\0")
    inner = sha256(bytes(byte ^ 0x36 for byte in block))
    outer = sha256(bytes(byte ^ 0x5C for byte in block))
    result = []
    append = result.append
    for pk, fingerprint in rows:
        mac = inner.copy()
        mac.update(b"janction-ledger-salt:%d" % pk)
        salted = outer.copy()
        salted.update(mac.digest())
        append([pk, sha256((salted.hexdigest() + ":" + fingerprint).encode()).hexdigest()])
    return result


def transaction_commitment_reveal(*, user_id: int, transaction_id: int) -> dict[str, Any]:
    """Reveal one settled transaction's legs and salt to a user who holds one of its accounts."""
    not_settled = TransactionNotSettled(
        f"You have no ledger transaction {transaction_id} in a published settlement batch.",
        detail={"transaction_id": transaction_id},
    )
    entries = list(
        Entry.objects.filter(transaction_id=transaction_id).values_list(
            "account__owner_id", "account__kind", "currency", "amount"
        )
    )
    if not any(owner == user_id for owner, _, _, _ in entries):
        raise not_settled
    batch = (
        SettlementBatch.objects.filter(
            first_transaction_id__lte=transaction_id, last_transaction_id__gte=transaction_id
        )
        .exclude(commitment_key="")
        .first()
    )
    if batch is None:
        raise not_settled
    txn = Transaction.objects.only("kind", "fingerprint").get(pk=transaction_id)
    currency = entries[0][2]
    legs = sorted([owner or 0, kind, int(amount)] for owner, kind, _, amount in entries)
    salt = transaction_salt(key=batch.commitment_key, transaction_id=transaction_id)
    return {
        "transaction_id": transaction_id,
        "batch_seq": batch.seq,
        "data_hash": "0x" + batch.data_id,
        "kind": txn.kind,
        "currency": currency,
        "legs": legs,
        "fingerprint": txn.fingerprint,
        "salt": salt,
        "commitment": transaction_commitment(salt=salt, fingerprint=txn.fingerprint),
    }
