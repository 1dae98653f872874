"""The chain watcher: credit `Deposited` events and record claims and stake changes, each exactly once.

A claim has no event of its own (it would cost every claimant 1,774 gas): it is a token `Transfer` out of
the Settlement contract that is not an unstake or a slash (those directly follow the contract's `StakeWithdrawn`
or `StakeSlashed`).
It scans the Settlement contract's and the two tokens' logs from a stored cursor up to `latest - confirmations`, one
database transaction per block range (the records and the cursor move together). Every event is keyed
by (chain id, transaction hash, log index) with a unique constraint and every ledger posting by
`chain:{chain_id}:{tx_hash}:{log_index}`, so a re-scan or a restart changes nothing twice.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from eth_utils import keccak
from hexbytes import HexBytes
from web3.types import EventData, LogReceipt

from ledger.chain.node import ChainConnection
from ledger.errors import InsufficientFunds
from ledger.models import (
    AccountKind,
    ChainClaim,
    ChainCursor,
    ChainDeposit,
    PayoutAllocation,
    SettlementAlert,
    StakeEvent,
    TransactionKind,
    Wallet,
)
from ledger.services import Leg, Posting, PostResult, ledger_deposit, ledger_post
from ledger.settlement.batches import settlement_alert_open, token_addresses
from ledger.settlement.connection import CHAIN_DOWN_ERRORS, chain_confirmations, chain_connection_get
from ledger.settlement.errors import ChainUnavailable
from ledger.settlement.rejections import batch_rejection_record

logger = logging.getLogger(__name__)

_EVENTS = ("Deposited", "Staked", "UnstakeRequested", "StakeWithdrawn", "StakeSlashed", "BatchRejected")
_TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
_STAKE_KINDS = {
    "Staked": StakeEvent.Kind.STAKED,
    "UnstakeRequested": StakeEvent.Kind.UNSTAKE_REQUESTED,
    "StakeWithdrawn": StakeEvent.Kind.WITHDRAWN,
    "StakeSlashed": StakeEvent.Kind.SLASHED,
}
# Settlement events directly followed by a JCT Transfer out of the contract that is not a claim.
_STAKE_PAYOUT_EVENTS = ("StakeWithdrawn", "StakeSlashed")


@dataclass(frozen=True)
class ScanResult:
    from_block: int
    to_block: int  # the cursor after the scan: every block up to here is processed
    events: int
    credited: int


def chain_idempotency_key(*, chain_id: int, tx_hash: str, log_index: int) -> str:
    """Return the ledger idempotency key of one chain event."""
    return f"chain:{chain_id}:{tx_hash}:{log_index}"


def ledger_claim_record(
    *, user_id: int, currency: str, amount: int, idempotency_key: str, metadata: dict | None = None
) -> PostResult:
    """Move an on-chain claim out of the user's earnings into the platform's chain-clearing account."""
    return ledger_post(
        Posting(
            kind=TransactionKind.WITHDRAWAL,
            currency=currency,
            idempotency_key=idempotency_key,
            legs=(
                Leg(owner_id=user_id, kind=AccountKind.EARNINGS, amount=-amount),
                Leg(owner_id=None, kind=AccountKind.CHAIN_CLEARING, amount=amount),
            ),
            memo="Claimed on chain",
            metadata=metadata or {},
        )
    )


def chain_watch_scan() -> ScanResult:
    """Process the Settlement contract's events from the cursor up to the last confirmed block."""
    conn = chain_connection_get()
    try:
        return _scan(conn)
    except CHAIN_DOWN_ERRORS as error:
        raise ChainUnavailable("The chain node did not answer; the watcher resumes from its cursor later.") from error


def chain_deposits_match() -> int:
    """Credit unmatched deposits whose sending address has since been linked to a user; return how many."""
    credited = 0
    unmatched = ChainDeposit.objects.filter(ledger_transaction__isnull=True).exclude(currency="")
    linked = set(Wallet.objects.filter(address__in=unmatched.values("from_address")).values_list("address", flat=True))
    for deposit_id in unmatched.filter(from_address__in=linked).order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            deposit = ChainDeposit.objects.select_for_update().get(pk=deposit_id)
            credited += _credit_deposit(deposit)
    return credited


def _scan(conn: ChainConnection) -> ScanResult:
    chain_id = conn.chain_id
    safe = conn.w3.eth.block_number - chain_confirmations(conn)
    cursor, _ = ChainCursor.objects.get_or_create(
        name=f"settlement:{chain_id}:{conn.settlement.address}", defaults={"last_block": conn.start_block - 1}
    )
    first = cursor.last_block + 1
    events = credited = 0
    while True:
        with transaction.atomic():
            cursor = ChainCursor.objects.select_for_update().get(pk=cursor.pk)
            start = cursor.last_block + 1
            if start > safe:
                break
            end = min(safe, start + settings.CHAIN_WATCH_MAX_BLOCKS - 1)
            logs = conn.w3.eth.get_logs({"address": conn.settlement.address, "fromBlock": start, "toBlock": end})
            # Only the tokens' transfers out of Settlement (claims and unstakes), not every transfer of USDC.
            logs += conn.w3.eth.get_logs(
                {
                    "address": [conn.usdc.address, conn.jct.address],
                    "topics": [_TRANSFER_TOPIC, "0x" + conn.settlement.address[2:].lower().rjust(64, "0")],
                    "fromBlock": start,
                    "toBlock": end,
                }
            )
            previous = None
            for log in sorted(logs, key=lambda entry: (entry["blockNumber"], entry["logIndex"])):
                handled, was_credited = _record_log(conn, chain_id, log, previous)
                events += handled
                credited += was_credited
                previous = log
            cursor.last_block = end
            cursor.save(update_fields=["last_block", "updated_at"])
    credited += chain_deposits_match()
    return ScanResult(from_block=first, to_block=cursor.last_block, events=events, credited=credited)


def _decode(conn: ChainConnection, log: LogReceipt) -> EventData | None:
    topic = HexBytes(log["topics"][0]) if log["topics"] else None
    for name in _EVENTS:
        event = conn.settlement.events[name]()
        if HexBytes(event.topic) == topic:
            return event.process_log(log)
    return None


def _claim_transfer(conn: ChainConnection, log: LogReceipt, previous: LogReceipt | None) -> EventData | None:
    """Return the decoded token Transfer if ``log`` is a claim payout: out of Settlement, not after StakeWithdrawn
    or StakeSlashed (an unstake's or a slash's transfer)."""
    if log["address"] == conn.settlement.address or not log["topics"]:
        return None
    token = conn.usdc if log["address"] == conn.usdc.address else conn.jct
    transfer = token.events.Transfer()
    if HexBytes(log["topics"][0]) != HexBytes(transfer.topic):
        return None
    event = transfer.process_log(log)
    if event["args"]["from"] != conn.settlement.address:
        return None
    stake_topics = {HexBytes(conn.settlement.events[name]().topic) for name in _STAKE_PAYOUT_EVENTS}
    if (
        previous is not None
        and previous["transactionHash"] == log["transactionHash"]
        and previous["address"] == conn.settlement.address
        and previous["topics"]
        and HexBytes(previous["topics"][0]) in stake_topics
    ):
        return None
    return event


def _record_log(
    conn: ChainConnection, chain_id: int, log: LogReceipt, previous: LogReceipt | None = None
) -> tuple[int, int]:
    """Record one log; return (1 if it is an event we keep else 0, 1 if it credited a deposit else 0)."""
    if log["address"] != conn.settlement.address:
        transfer = _claim_transfer(conn, log, previous)
        return (_record_claim(conn, chain_id, transfer), 0) if transfer is not None else (0, 0)
    event = _decode(conn, log)
    if event is None:
        return 0, 0
    key = {
        "chain_id": chain_id,
        "tx_hash": HexBytes(event["transactionHash"]).to_0x_hex(),
        "log_index": event["logIndex"],
    }
    block = event["blockNumber"]
    args = event["args"]
    currencies = {token: currency for currency, token in token_addresses(conn).items()}
    if event["event"] == "Deposited":
        deposit, created = ChainDeposit.objects.get_or_create(
            **key,
            defaults={
                "block_number": block,
                "token": args["token"],
                "currency": currencies.get(args["token"], ""),
                "from_address": args["from"],
                "amount": args["amount"],
            },
        )
        if created and not deposit.currency:
            settlement_alert_open(
                None, SettlementAlert.Kind.UNKNOWN_TOKEN, f"Deposit of unknown token {deposit.token}.", key
            )
        if deposit.ledger_transaction_id is not None or not deposit.currency:
            return 1, 0
        return 1, _credit_deposit(deposit)
    if event["event"] == "BatchRejected":
        batch_rejection_record(seq=args["seq"], root=args["root"], tx_hash=key["tx_hash"], block_number=block)
        return 1, 0
    unlock_at = args.get("unlockAt")
    StakeEvent.objects.get_or_create(
        **key,
        defaults={
            "block_number": block,
            "kind": _STAKE_KINDS[event["event"]],
            "account": args["account"],
            "amount": args["amount"],
            "unlock_at": datetime.datetime.fromtimestamp(unlock_at, tz=datetime.UTC) if unlock_at else None,
            "from_pending": args.get("fromPending", 0),
            "evidence": HexBytes(args["evidence"]).to_0x_hex() if "evidence" in args else "",
        },
    )
    return 1, 0


def _record_claim(conn: ChainConnection, chain_id: int, transfer: EventData) -> int:
    """Record a claim payout once and book it out of the claimant's earnings; return 1."""
    token, account, amount = transfer["address"], transfer["args"]["to"], transfer["args"]["value"]
    key = {
        "chain_id": chain_id,
        "tx_hash": HexBytes(transfer["transactionHash"]).to_0x_hex(),
        "log_index": transfer["logIndex"],
    }
    if ChainClaim.objects.filter(**key).exists():
        return 1
    earlier = ChainClaim.objects.filter(token=token, account=account).values_list("amount", flat=True)
    currencies = {address: currency for currency, address in token_addresses(conn).items()}
    claim, created = ChainClaim.objects.get_or_create(
        **key,
        defaults={
            "block_number": transfer["blockNumber"],
            "token": token,
            "currency": currencies.get(token, ""),
            "account": account,
            "amount": amount,
            "cumulative": sum(int(value) for value in earlier) + amount,
        },
    )
    if created:
        _book_claim(claim)
    return 1


def _credit_deposit(deposit: ChainDeposit) -> int:
    """Credit a deposit to the owner of its sending wallet; return 1 if it was credited now, else 0."""
    user_id = Wallet.objects.filter(address=deposit.from_address).values_list("user_id", flat=True).first()
    if user_id is None:
        return 0  # unmatched: credited by chain_deposits_match once the address is linked
    result = ledger_deposit(
        user_id=user_id,
        currency=deposit.currency,
        amount=int(deposit.amount),
        idempotency_key=chain_idempotency_key(
            chain_id=deposit.chain_id, tx_hash=deposit.tx_hash, log_index=deposit.log_index
        ),
        memo="On-chain deposit",
        metadata={"chain_id": deposit.chain_id, "tx_hash": deposit.tx_hash, "from": deposit.from_address},
    )
    deposit.user_id = user_id
    deposit.ledger_transaction = result.transaction
    deposit.credited_at = timezone.now()
    deposit.save(update_fields=["user", "ledger_transaction", "credited_at"])
    logger.info("watcher: credited deposit %s:%s to user %s", deposit.tx_hash, deposit.log_index, user_id)
    return 1


def _book_claim(claim: ChainClaim) -> None:
    """Take a claim paid on chain out of the claimant's earnings, or raise an alert when that cannot be done."""
    key = {"chain_id": claim.chain_id, "tx_hash": claim.tx_hash, "log_index": claim.log_index}
    owners = set(PayoutAllocation.objects.filter(address=claim.account).values_list("user_id", flat=True))
    if len(owners) != 1 or not claim.currency:
        message = f"Claim of {claim.amount} {claim.currency or claim.token} by {claim.account} matches no single user."
        settlement_alert_open(None, SettlementAlert.Kind.CLAIM_UNMATCHED, message, {**key, "users": sorted(owners)})
        return
    (user_id,) = owners
    try:
        result = ledger_claim_record(
            user_id=user_id,
            currency=claim.currency,
            amount=int(claim.amount),
            idempotency_key=chain_idempotency_key(**key),
            metadata={"chain_id": claim.chain_id, "tx_hash": claim.tx_hash, "account": claim.account},
        )
    except InsufficientFunds:
        message = f"Claim of {claim.amount} {claim.currency} by user {user_id} exceeds their recorded earnings."
        settlement_alert_open(None, SettlementAlert.Kind.CLAIM_UNBALANCED, message, {**key, "user": user_id})
        claim.user_id = user_id
        claim.save(update_fields=["user"])
        return
    claim.user_id = user_id
    claim.ledger_transaction = result.transaction
    claim.save(update_fields=["user", "ledger_transaction"])
