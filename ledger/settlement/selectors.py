"""Settlement reads for the API: batches, their DA data, proofs, claimable amounts, deposits and stake."""

from __future__ import annotations

import datetime
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet
from web3 import Web3

from ledger.chain.node import ChainConnection
from ledger.currencies import from_base_units
from ledger.errors import WalletNotFound
from ledger.fields import ExactSum
from ledger.models import (
    AccountKind,
    BatchData,
    ChainClaim,
    ChainDeposit,
    Entry,
    PayoutAllocation,
    SettlementAlert,
    SettlementBatch,
    StakeEvent,
    Wallet,
)
from ledger.settlement.connection import CHAIN_DOWN_ERRORS, chain_confirmations, chain_connection_get
from ledger.settlement.errors import (
    BatchDataNotFound,
    BatchNotFound,
    InvalidAddress,
    InvalidDataHash,
    NoPostedBatch,
)
from ledger.settlement.trees import leaf_fields, tree_get

_SHA256 = re.compile(r"[0-9a-f]{64}")


def chain_info() -> dict[str, Any]:
    """Describe the settlement chain this deployment talks to."""
    conn = chain_connection_get()
    try:
        chain_id = conn.chain_id
    except CHAIN_DOWN_ERRORS:
        chain_id = None
    return {
        "mode": "embedded" if conn.embedded else "rpc",
        "label": conn.label,
        "chain_id": chain_id,
        "settlement": conn.settlement.address,
        "tokens": {"USDC": conn.usdc.address, "JCT": conn.jct.address},
        "confirmations": chain_confirmations(conn),
    }


def batch_list() -> QuerySet[SettlementBatch]:
    """Return every settlement batch, newest first."""
    return SettlementBatch.objects.order_by("-seq")


def batch_get(*, seq: int) -> SettlementBatch:
    """Return batch ``seq`` or raise BatchNotFound."""
    batch = SettlementBatch.objects.filter(seq=seq).first()
    if batch is None:
        raise BatchNotFound(f"There is no settlement batch {seq}.")
    return batch


def batch_data_get(*, sha256: str) -> BatchData:
    """Return the DA copy whose SHA-256 is ``sha256`` (64 lowercase hex digits, optional 0x)."""
    digest = sha256.lower().removeprefix("0x")
    if not _SHA256.fullmatch(digest):
        raise InvalidDataHash(f"{sha256!r} is not a SHA-256 digest; use a batch's data_hash (64 hex digits).")
    data = BatchData.objects.filter(sha256=digest).first()
    if data is None:
        raise BatchDataNotFound(f"No batch data has SHA-256 {digest}.")
    return data


def alert_list() -> QuerySet[SettlementAlert]:
    """Return settlement alerts, open ones first, newest first."""
    return SettlementAlert.objects.select_related("batch").order_by("-resolved_at", "-created_at", "-pk")


def _user_addresses(*, user_id: int, address: str | None) -> list[str]:
    """Return the caller's addresses (linked wallets and past payout addresses), or just ``address`` if theirs."""
    owned = set(Wallet.objects.filter(user_id=user_id).values_list("address", flat=True))
    owned |= set(PayoutAllocation.objects.filter(user_id=user_id).values_list("address", flat=True))
    if address is None:
        return sorted(owned)
    if not isinstance(address, str) or not Web3.is_address(address):
        raise InvalidAddress(f"{address!r} is not an EVM address; send 0x followed by 40 hex digits.")
    checksummed = Web3.to_checksum_address(address)
    if checksummed not in owned:
        raise WalletNotFound(f"{checksummed} is not one of your wallets; link it first under /api/v1/wallets/.")
    return [checksummed]


def _latest_posted() -> SettlementBatch:
    batch = SettlementBatch.objects.filter(status=SettlementBatch.Status.POSTED).order_by("-seq").first()
    if batch is None:
        raise NoPostedBatch("No settlement batch has been posted on chain yet; earnings become claimable after one.")
    return batch


@dataclass(frozen=True)
class _ClaimBatches:
    """The posted batch whose root claims verify against now, and a posted one still inside its claim delay."""

    active: SettlementBatch | None
    pending: SettlementBatch | None
    claimable_from: datetime.datetime | None


def _claim_batches(conn: ChainConnection | None) -> _ClaimBatches:
    """Split the posted batches into the claimable one and the pending one, as the contract sees them.

    A root posted with a claim delay is pending until ``activatesAt``; its proofs fail on chain until then, so
    they are not served as claimable. Without the chain (``conn`` None, or the node down) the latest posted batch
    counts as claimable, as before the delay existed.
    """
    latest = _latest_posted()
    if conn is None:
        return _ClaimBatches(active=latest, pending=None, claimable_from=None)
    try:
        settlement = conn.settlement.functions
        active_seq, pending_seq = settlement.activeSeq().call(), settlement.pendingSeq().call()
        activates_at = settlement.activatesAt().call() if pending_seq else 0
    except CHAIN_DOWN_ERRORS:
        return _ClaimBatches(active=latest, pending=None, claimable_from=None)
    posted = SettlementBatch.objects.filter(status=SettlementBatch.Status.POSTED)
    active = posted.filter(seq=active_seq).first() if active_seq else None
    pending = posted.filter(seq=pending_seq).first() if pending_seq else None
    if active is None and pending is None:
        return _ClaimBatches(active=latest, pending=None, claimable_from=None)
    return _ClaimBatches(
        active=active,
        pending=pending,
        claimable_from=datetime.datetime.fromtimestamp(activates_at, tz=datetime.UTC) if pending else None,
    )


def _recorded_claimed(token: str, account: str) -> int:
    # In Python: on SQLite the column is decimal text, which MAX would compare as text.
    claims = ChainClaim.objects.filter(token=token, account=account).values_list("cumulative", flat=True)
    return max(claims, default=0)


def _batch_rows(
    batch: SettlementBatch, accounts: list[str], conn: ChainConnection | None, *, with_proofs: bool
) -> list[dict[str, Any]]:
    cached = tree_get(sha256=batch.data_id)
    content, tree, index = cached.content, cached.tree, cached.position
    currency_of = {token: currency for currency, token in content["tokens"].items()}
    rows = []
    for account in accounts:
        for token, currency in sorted(currency_of.items(), key=lambda item: item[1], reverse=True):
            position = index.get((token, account))
            if position is None:
                continue
            leaf = content["leaves"][position]
            fields = leaf_fields(content, position)
            if fields is None:  # a DA copy before version 4 (an earlier contract): recorded claims only
                allocation, cumulative, words = (leaf[0] if len(leaf) == 4 else None), int(leaf[-1]), None
            else:
                allocation, cumulative, words = fields.index, fields.cumulative, [int(word) for word in leaf]
            claimed, source = _recorded_claimed(token, account), "recorded"
            if conn is not None and words is not None:
                try:
                    claimed, source = conn.settlement.functions.paidOf(*words).call(), "chain"
                except CHAIN_DOWN_ERRORS:
                    pass
            row = {
                "index": None if allocation is None else int(allocation),
                "currency": currency,
                "token": token,
                "account": account,
                "cumulative_amount": str(cumulative),
                "claimed_amount": str(claimed),
                "claimable_amount": str(max(cumulative - claimed, 0)),
                "claimable": from_base_units(max(cumulative - claimed, 0), currency),
                "claimed_source": source,
            }
            if with_proofs:
                # claim(leaf[0], leaf[1], leaf[2], proof): the three packed words of the leaf.
                row["leaf"] = [str(word) for word in words] if words is not None else None
                row["proof"] = tree.get_proof(position)
            rows.append(row)
    return rows


def _batch_summary(batch: SettlementBatch) -> dict[str, Any]:
    return {"seq": batch.seq, "root": batch.root, "data_hash": "0x" + batch.data_id}


def _leaf_rows(*, user_id: int, address: str | None, with_proofs: bool) -> dict[str, Any]:
    accounts = _user_addresses(user_id=user_id, address=address)
    conn = chain_connection_get()
    batches = _claim_batches(conn)
    read_conn = conn if with_proofs else None
    result: dict[str, Any] = {"batch": None, "leaves": [], "pending": None}
    if batches.active is not None:
        result["batch"] = _batch_summary(batches.active)
        result["leaves"] = _batch_rows(batches.active, accounts, read_conn, with_proofs=with_proofs)
    if batches.pending is not None:
        result["pending"] = {
            **_batch_summary(batches.pending),
            "claimable_from": batches.claimable_from,
            "leaves": _batch_rows(batches.pending, accounts, read_conn, with_proofs=False),
        }
    return result


def proofs_for_user(*, user_id: int, address: str | None = None) -> dict[str, Any]:
    """Return the caller's leaves in the claimable batch with Merkle proofs and on-chain claimed amounts.

    A batch still inside its claim delay is listed under ``pending`` with ``claimable_from`` and without proofs.
    """
    result = _leaf_rows(user_id=user_id, address=address, with_proofs=True)
    if result["batch"] is None:
        pending = result["pending"]
        raise NoPostedBatch(
            f"Batch {pending['seq']} is posted but claimable only from {pending['claimable_from'].isoformat()}.",
            detail={"seq": pending["seq"], "claimable_from": pending["claimable_from"].isoformat()},
        )
    return result


def claimable_for_user(*, user_id: int, with_proofs: bool = False) -> dict[str, Any]:
    """Return what the caller can claim now, what a batch in its claim delay will make claimable and when, and
    what it earned that no posted batch carries yet. ``with_proofs``: each claimable leaf with its proof and its
    claimed amount read on chain (the Payouts page's claim buttons)."""
    try:
        result = _leaf_rows(user_id=user_id, address=None, with_proofs=with_proofs)
    except NoPostedBatch:
        result = {"batch": None, "leaves": [], "pending": None}
    earned = dict(
        Entry.objects.filter(account__owner_id=user_id, account__kind=AccountKind.EARNINGS, amount__gt=0)
        .values_list("currency")
        .annotate(total=ExactSum("amount"))
    )
    published: dict[str, int] = defaultdict(int)
    # A pending batch carries every leaf of the claimable one (leaves are cumulative and never leave a tree).
    for row in result["pending"]["leaves"] if result["pending"] else result["leaves"]:
        published[row["currency"]] += int(row["cumulative_amount"])
    result["unpublished"] = [
        {"currency": currency, "amount": str(max(int(total) - published[currency], 0))}
        for currency, total in sorted(earned.items())
    ]
    return result


def deposits_for_user(*, user_id: int) -> QuerySet[ChainDeposit]:
    """Return deposits credited to the caller or sent from one of their wallets, newest first."""
    addresses = Wallet.objects.filter(user_id=user_id).values("address")
    return ChainDeposit.objects.filter(Q(user_id=user_id) | Q(from_address__in=addresses)).order_by(
        "-block_number", "-log_index"
    )


def stake_for_user(*, user_id: int) -> list[dict[str, Any]]:
    """Return the recorded JCT stake of each of the caller's wallets: staked, pending unstake, unlock time."""
    rows = []
    for address in Wallet.objects.filter(user_id=user_id).order_by("pk").values_list("address", flat=True):
        totals = dict(StakeEvent.objects.filter(account=address).values_list("kind").annotate(total=ExactSum("amount")))
        staked_in = int(totals.get(StakeEvent.Kind.STAKED, 0))
        requested = int(totals.get(StakeEvent.Kind.UNSTAKE_REQUESTED, 0))
        withdrawn = int(totals.get(StakeEvent.Kind.WITHDRAWN, 0))
        slashed = int(totals.get(StakeEvent.Kind.SLASHED, 0))
        slashed_pending = int(
            StakeEvent.objects.filter(account=address, kind=StakeEvent.Kind.SLASHED).aggregate(
                total=ExactSum("from_pending")
            )["total"]
            or 0
        )
        pending = requested - withdrawn - slashed_pending
        last_request = (
            StakeEvent.objects.filter(account=address, kind=StakeEvent.Kind.UNSTAKE_REQUESTED)
            .order_by("-block_number", "-log_index")
            .first()
        )
        rows.append(
            {
                "account": address,
                "staked_amount": str(staked_in - requested - (slashed - slashed_pending)),
                "pending_unstake_amount": str(pending),
                "unlock_at": last_request.unlock_at if pending and last_request else None,
            }
        )
    return rows
