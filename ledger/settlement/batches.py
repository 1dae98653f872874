"""Settlement batches: build the tree of cumulative amounts owed, store its DA copy, post its root exactly once.

Exactly once: every step runs under one settlement lock (a PostgreSQL advisory lock); a batch row is
created with seq = last + 1 (unique) only when every earlier batch is posted; its transaction hash is
recorded before the transaction is sent, and before sending, the chain's `lastSeq` and the recorded
receipt are checked, so a batch the chain already holds is marked posted instead of sent again.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone
from eth_utils import to_checksum_address
from hexbytes import HexBytes
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3RPCError

from ledger.chain.client import decode_custom_error, send
from ledger.chain.node import ChainConnection
from ledger.currencies import Currency
from ledger.fields import ExactSum
from ledger.hooks import batch_sections_build
from ledger.merkle import StandardMerkleTree, checksum_address
from ledger.models import (
    AccountKind,
    BatchData,
    Entry,
    PayoutAllocation,
    SettlementAlert,
    SettlementBatch,
    Transaction,
    Wallet,
)
from ledger.settlement import leaves as claim_leaves
from ledger.settlement.commitments import COMMITMENT_SCHEME, batch_commitments, commitment_key_new
from ledger.settlement.connection import (
    CHAIN_DOWN_ERRORS,
    chain_confirmations,
    chain_connection_get,
    settlement_lock,
)
from ledger.settlement.errors import (
    BatchPostFailed,
    BatchPostPending,
    ChainMismatch,
    ChainUnavailable,
    SettlementBusy,
)
from ledger.settlement.holds import held_rental_ids
from ledger.settlement.migration import carried_amounts
from ledger.settlement.trees import tree_remember

logger = logging.getLogger(__name__)

# Three packed words (ledger/settlement/leaves.py): the allocation index, its two claim bits as read at the batch's
# state block, the leaf's parity and what the index was paid by then; token | cumulative; account | the previous
# root's cumulative. The index never changes for a (token, account), so the contract keeps its two claim bits
# 128 indices to a storage word.
LEAF_TYPES = claim_leaves.LEAF_TYPES
# 4: packed leaves built from the claim bits at `state_block` (3: allocation indices and JCT rewards, 2: salted
# commitments, 1: fingerprints).
DATA_VERSION = 4
# Claim-bit words read per eth_call (128 indices each).
_WORDS_PER_CALL = 2_000
# Seconds a batch-preparing worker waits for in-flight ledger writes before giving up (and retrying).
_LEDGER_LOCK_TIMEOUT = "10s"
# Batches still to be posted (a rejected one is posted, and stays as it is).
_UNPOSTED = (SettlementBatch.Status.PREPARED, SettlementBatch.Status.SENT)
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
# Fee multiplier when re-sending a stuck batch transaction with the same nonce (replacement needs > +10%).
_REPLACEMENT_FEE_FACTOR = 2


@dataclass(frozen=True)
class BatchContent:
    """What a batch publishes: its sorted leaves and a salted commitment to each ledger transaction it covers."""

    leaves: list[list[Any]]
    transactions: list[list[Any]]
    first_transaction_id: int
    last_transaction_id: int


def canonical_json(value: Any) -> str:
    """Serialise ``value`` as canonical JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def token_addresses(conn: ChainConnection) -> dict[str, str]:
    """Map each ledger currency to the address of its token on the settlement chain."""
    return {str(Currency.USDC): conn.usdc.address, str(Currency.JCT): conn.jct.address}


def settlement_batch_run() -> SettlementBatch | None:
    """Post every unposted batch in order, then prepare and post a new one if anything changed."""
    conn = chain_connection_get()
    with settlement_lock() as acquired:
        if not acquired:
            logger.info("settlement: another worker holds the settlement lock; nothing to do here")
            return None
        batch = None
        _reorg_recheck_locked(conn)
        for batch in SettlementBatch.objects.filter(status__in=_UNPOSTED).order_by("seq"):
            _post_locked(conn, batch)
        fresh = _prepare_locked(conn)
        if fresh is not None:
            batch = _post_locked(conn, fresh)
        return batch


def settlement_batch_prepare() -> SettlementBatch | None:
    """Create the next batch from the ledger, or return None when nothing owed has changed."""
    conn = chain_connection_get()
    with settlement_lock() as acquired:
        if not acquired:
            raise SettlementBusy("Another worker is preparing or posting a settlement batch; try again shortly.")
        return _prepare_locked(conn)


def settlement_batch_post(*, batch_id: int) -> SettlementBatch:
    """Post batch ``batch_id`` on chain exactly once, or mark it posted if the chain already has it."""
    conn = chain_connection_get()
    with settlement_lock() as acquired:
        if not acquired:
            raise SettlementBusy("Another worker is posting a settlement batch; try again shortly.")
        batch = SettlementBatch.objects.get(pk=batch_id)
        earlier = SettlementBatch.objects.filter(seq__lt=batch.seq, status__in=_UNPOSTED)
        if earlier.exists():
            raise ChainMismatch(f"Batch {batch.seq} cannot be posted before batch {earlier.order_by('seq')[0].seq}.")
        return _post_locked(conn, batch)


def settlement_posting_hold() -> SettlementAlert | None:
    """Return the open `batch_rejected` alert that holds posting (ledger.settlement.rejections), or None."""
    return (
        SettlementAlert.objects.filter(kind=SettlementAlert.Kind.BATCH_REJECTED, resolved_at__isnull=True)
        .order_by("pk")
        .first()
    )


# --- Preparing ---------------------------------------------------------------------------------------


def _ledger_high_water_mark() -> int:
    """Return the largest ledger transaction id such that no transaction at or below it is still uncommitted."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{_LEDGER_LOCK_TIMEOUT}'")
                # SHARE waits for every in-flight insert into the table, so no smaller id commits later.
                cursor.execute(f"LOCK TABLE {Transaction._meta.db_table} IN SHARE MODE")
        return Transaction.objects.aggregate(top=Max("pk"))["top"] or 0


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while the block runs (reference counting still frees everything acyclic).

    Preparing a batch of 100,000 accounts allocates a few million short-lived containers, and the collector's
    full passes over them took about a third of the time; it resumes (if it was on) as soon as the batch is made.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _prepare_locked(conn: ChainConnection) -> SettlementBatch | None:
    with _cycle_collector_paused():
        return _prepare_batch(conn)


def _prepare_batch(conn: ChainConnection) -> SettlementBatch | None:
    if SettlementBatch.objects.filter(status__in=_UNPOSTED).exists():
        return None
    hold = settlement_posting_hold()
    if hold is not None:
        logger.warning("settlement: no new batch while the guardian's rejection is unresolved (alert %s)", hold.pk)
        return None
    high_water = _ledger_high_water_mark()
    with transaction.atomic():
        # The previous DA copy's content is not needed (only its hash, the batch's data_id): leave it unread.
        previous = (
            SettlementBatch.objects.select_for_update()
            .select_related("data")
            .defer("data__content")
            .order_by("-seq")
            .first()
        )
        low_water = previous.last_transaction_id if previous else 0
        # The root claims verify against now: the last batch that was not rejected (after a rejection, the same
        # amounts are posted again, built on the root that stayed claimable).
        standing = (
            previous
            if previous is None or previous.status != SettlementBatch.Status.REJECTED
            else SettlementBatch.objects.exclude(status=SettlementBatch.Status.REJECTED).order_by("-seq").first()
        )
        try:
            base = _claim_base(conn, standing)
        except CHAIN_DOWN_ERRORS as error:
            raise ChainUnavailable(
                "The chain node did not answer; a batch is built from its claim state, so none is prepared until it is "
                "back."
            ) from error
        if base is None:
            return None
        amounts = _allocate(high_water=high_water, tokens=token_addresses(conn))
        if not amounts:
            return None
        if base.previous is not None and _unchanged(base.previous_leaves, amounts):
            return None  # nothing owed changed since the standing root
        carried_from, carried = (
            carried_amounts(conn, (leaf[:3] for leaf in amounts)) if base.previous is None else (None, {})
        )
        try:
            words = _claim_leaves(conn, base, amounts, carried)
        except CHAIN_DOWN_ERRORS as error:
            raise ChainUnavailable("The chain node did not answer while the claim bits were read.") from error
        except claim_leaves.LeafRangeError as error:
            raise BatchPostFailed(f"The batch cannot be built: {error}") from error
        # Hashed from the ints; the published leaves are the tree's values, their decimal strings.
        tree = StandardMerkleTree.of_uint256_words(words, len(LEAF_TYPES))
        leaves = [list(value) for value in tree.values]
        jct_rewards = _rewards_emitted(low_water=low_water, high_water=high_water)
        commitment_key = commitment_key_new()
        transactions = batch_commitments(
            key=commitment_key,
            rows=list(
                Transaction.objects.filter(pk__gt=low_water, pk__lte=high_water)
                .order_by("pk")
                .values_list("pk", "fingerprint")
            ),
        )
        seq = (previous.seq if previous else 0) + 1
        published = {
            "version": DATA_VERSION,
            "seq": seq,
            "previous_data_hash": previous.data_id if previous else None,
            "settlement": conn.settlement.address,
            "tokens": token_addresses(conn),
            "leaf_types": list(LEAF_TYPES),
            "leaf_format": claim_leaves.LEAF_FORMAT,
            "leaves": leaves,
            "parity": base.parity,
            "state_block": base.state_block,
            "previous_seq": base.previous.seq if base.previous is not None else None,
            "carried_from": carried_from,
            "root": tree.root,
            "jct_rewards": str(jct_rewards),
            "ledger_transactions": {
                "after_id": low_water,
                "through_id": high_water,
                "fields": ["id", "commitment"],
                "commitment": COMMITMENT_SCHEME,
                "items": transactions,
            },
            **batch_sections_build(key=commitment_key, seq=seq),
        }
        content = canonical_json(published)
        digest = hashlib.sha256(content.encode()).hexdigest()
        # The proof endpoint serves this batch from the tree just built (in this process), never rebuilding it.
        # Where each (token, account) leaf sits: the packed leaves are in the order of `amounts`, whose tokens and
        # accounts are already checksummed (the same map trees._positions reads back from the leaves).
        position = {(token, account): number for number, (_, token, account, _) in enumerate(amounts)}
        tree_remember(sha256=digest, content=published, tree=tree, position=position)
        data = _batch_data_store(sha256=digest, content=content)
        try:
            with transaction.atomic():
                return SettlementBatch.objects.create(
                    seq=seq,
                    root=tree.root,
                    data=data,
                    commitment_key=commitment_key,
                    first_transaction_id=low_water + 1,
                    last_transaction_id=high_water,
                    transaction_count=len(transactions),
                    leaf_count=len(leaves),
                )
        except IntegrityError:
            raise SettlementBusy(f"Batch {seq} was created by another worker.") from None


def _batch_data_store(*, sha256: str, content: str) -> BatchData:
    """Store the DA copy ``content`` under ``sha256`` unless it is stored already; return its row.

    On PostgreSQL the text travels as a bound parameter (Django's client-side binding escaped 19 MB into the SQL
    text at 100,000 leaves, and the server parsed it back out: about 0.3 s more). Same row, same transaction.
    """
    if connection.vendor != "postgresql":
        return BatchData.objects.get_or_create(sha256=sha256, defaults={"content": content})[0]
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:  # server-side binding, unlike Django's cursors
        cursor.execute(
            f"INSERT INTO {BatchData._meta.db_table} (sha256, content, created_at) VALUES (%s, %s, %s) "  # noqa: S608
            "ON CONFLICT (sha256) DO NOTHING RETURNING created_at",
            [sha256, content, timezone.now()],
        )
        inserted = cursor.fetchone()
    if inserted is None:  # the same copy was stored before
        return BatchData.objects.get(sha256=sha256)
    data = BatchData(sha256=sha256, content=content, created_at=inserted[0])
    data._state.adding = False
    data._state.db = connection.alias
    return data


@dataclass(frozen=True)
class _ClaimBase:
    """What a new batch's leaves are built on: the standing root's leaves and the chain's claim state."""

    previous: SettlementBatch | None  # the standing batch on this contract (None: this contract's first root)
    previous_leaves: dict[int, tuple[int, int, int]]  # index -> the standing root's packed leaf
    parity: int
    state_block: int


def _claim_base(conn: ChainConnection, standing: SettlementBatch | None) -> _ClaimBase | None:
    """Return the base of the next batch's leaves, or None while the standing root is not yet active and confirmed.

    The schedule condition of the two-bit claims (docs/settlement.md): a root is built only from the claim bits
    at a block with CHAIN_CONFIRMATIONS blocks on top, at which the standing root was already the claimable one.
    Claims against the root before it are over by then, so its bit (this batch's own) is final; claims against
    the standing root after that block are what the leaf's `previous` amount accounts for.
    """
    state_block = max(conn.w3.eth.block_number - chain_confirmations(conn), 0)
    content = json.loads(standing.data.content) if standing is not None else None
    same_contract = (
        content is not None
        and content.get("version", 0) >= DATA_VERSION
        and content.get("settlement", "").lower() == conn.settlement.address.lower()
    )
    if not same_contract:
        return _ClaimBase(None, {}, 0, state_block)
    functions = conn.settlement.functions
    active = functions.activeSeq().call(block_identifier=state_block)
    pending = functions.pendingSeq().call(block_identifier=state_block)
    if active != standing.seq or pending != 0:
        _activate_if_due(conn, standing)
        logger.info(
            "settlement: waiting for batch %s to be claimable at a confirmed block (block %s: active %s, pending %s)",
            standing.seq,
            state_block,
            active,
            pending,
        )
        return None
    previous_leaves = claim_leaves.parse_words(content["leaves"])
    return _ClaimBase(
        previous=standing,
        previous_leaves=previous_leaves,
        parity=1 - int(content["parity"]),
        state_block=state_block,
    )


def _activate_if_due(conn: ChainConnection, standing: SettlementBatch) -> None:
    """Activate the standing batch on chain once its claim delay is over (anyone may; the operator pays the gas)."""
    functions = conn.settlement.functions
    if functions.pendingSeq().call() != standing.seq:
        return
    if conn.w3.eth.get_block("latest")["timestamp"] < functions.activatesAt().call():
        return
    try:
        send(conn.w3, conn.operator, functions.activateBatch())
        logger.info("settlement: activated batch %s, its claim delay being over", standing.seq)
    except (ContractLogicError, Web3RPCError) as error:
        logger.warning("settlement: activating batch %s failed: %s", standing.seq, error)


def _claim_leaves(
    conn: ChainConnection, base: _ClaimBase, amounts: list[list[Any]], carried: dict[int, int]
) -> list[tuple[int, int, int]]:
    """Return the packed leaves (three ints each) of ``amounts`` built on ``base``'s claim state at its state block."""
    slots = claim_leaves.word_slots(leaf[0] for leaf in amounts)
    words: dict[int, int] = {}
    for start in range(0, len(slots), _WORDS_PER_CALL):
        chunk = slots[start : start + _WORDS_PER_CALL]
        values = conn.settlement.functions.claimWords(chunk).call(block_identifier=base.state_block)
        words.update(zip(chunk, values, strict=True))
    return claim_leaves.pack_batch_words(
        amounts, parity=base.parity, words=words, previous=base.previous_leaves, carried=carried
    )


def _unchanged(previous: dict[int, tuple[int, int, int]], amounts: list[list[Any]]) -> bool:
    """Tell whether ``amounts`` owe exactly what the standing root's leaves owe (same indices, tokens, accounts)."""
    if len(previous) != len(amounts):
        return False
    mask = 2**160 - 1
    for index, token, account, cumulative in amounts:
        earlier = previous.get(index)
        if (
            earlier is None
            or earlier[1] != int(token, 16) | int(cumulative) << 160
            or earlier[2] & mask != int(account, 16)
        ):
            return False
    return True


def _rewards_emitted(*, low_water: int, high_water: int) -> int:
    """Return the JCT the rewards pool paid out in ledger transactions (low_water, high_water]: what the post mints."""
    paid = Entry.objects.filter(
        account__kind=AccountKind.REWARDS_POOL,
        currency=Currency.JCT,
        amount__lt=0,
        transaction_id__gt=low_water,
        transaction_id__lte=high_water,
    ).aggregate(total=ExactSum("amount"))["total"]
    return -int(paid or 0)


def _allocate(*, high_water: int, tokens: dict[str, str]) -> list[list[Any]]:
    """Bring each user's payout allocations up to their cumulative earnings and return the leaves by index.

    A leaf's index is the smallest id among the allocations of its (currency, address): stable across batches
    and never shared, so the contract can file claimed amounts under it.

    One aggregate query for what each user earned, one read of every allocation (locked), then at most
    one INSERT for the new allocations and one UPDATE for the raised ones, whatever the number of users.
    """
    entries = Entry.objects.filter(
        # Credits, less dispute refunds: a transaction's metadata is looked up only for the debits (a join on every
        # entry's transaction cost 100,000 index probes at 100,000 accounts).
        Q(amount__gt=0)
        | Exists(Transaction.objects.filter(pk=OuterRef("transaction_id"), metadata__has_key="dispute")),
        account__kind=AccountKind.EARNINGS,
        account__owner__isnull=False,
        transaction_id__lte=high_water,
    )
    held_rentals = held_rental_ids()  # rentals that may still be refunded: published once their window closes
    if held_rentals:
        entries = entries.exclude(transaction__metadata__rental__in=sorted(held_rentals))
    earned = entries.values_list("account__owner_id", "currency").annotate(total=ExactSum("amount"))
    # A user's payout address is their first wallet still linked (lowest id); checksummed only when used.
    first_wallet: dict[int, str] = {}
    for user_id, address in Wallet.objects.order_by("user_id", "pk").values_list("user_id", "address"):
        if user_id not in first_wallet:
            first_wallet[user_id] = address
    # (user, currency) -> {address: cumulative}, and the row id of each allocation.
    held_by: dict[tuple[int, str], dict[str, int]] = defaultdict(dict)
    row_id: dict[tuple[int, str, str], int] = {}
    for pk, user_id, currency, address, cumulative in (
        PayoutAllocation.objects.select_for_update()
        .order_by("pk")
        .values_list("pk", "user_id", "currency", "address", "cumulative")
    ):
        held_by[(user_id, currency)][address] = int(cumulative)
        row_id[(user_id, currency, address)] = pk
    created: list[tuple[int, str, str, int]] = []
    raised: list[tuple[int, int]] = []
    for user_id, currency, total in earned:
        raw = first_wallet.get(user_id)
        if raw is None:
            continue  # carried over: the amount is published once the user links a wallet
        held = held_by[(user_id, currency)]
        # Every allocation's address was written as to_checksum_address(...), which maps its own output to
        # itself: a wallet address equal to one of them needs no second keccak (most users, batch after batch).
        address = raw if raw in held else _checksummed(raw)
        current = held.get(address)
        elsewhere = sum(held.values()) - (current or 0)
        target = int(total) - elsewhere
        if current is None and target > 0:
            held[address] = target
            created.append((user_id, currency, address, target))
        elif current is not None and target > current:
            held[address] = target
            raised.append((row_id[(user_id, currency, address)], target))
    new_rows = _allocations_write(created, raised)
    first_row: dict[tuple[str, str], int] = {}
    for (_, currency, address), pk in [*row_id.items(), *new_rows]:
        key = (currency, address)
        first_row[key] = min(pk, first_row.get(key, pk))
    amounts: dict[tuple[str, str], int] = defaultdict(int)
    for (_, currency), held in held_by.items():
        for address, cumulative in held.items():
            amounts[(currency, address)] += cumulative
    leaves = [
        [first_row[(currency, address)], tokens[currency], address, str(amount)]
        for (currency, address), amount in amounts.items()
        if amount > 0
    ]
    leaves.sort(key=lambda leaf: leaf[0])
    return leaves


def _checksummed(address: str) -> str:
    """Return ``address`` in EIP-55 case (fast for well-formed addresses; eth_utils, which raises, otherwise)."""
    return checksum_address(address) if _HEX_ADDRESS.fullmatch(address) else to_checksum_address(address)


def _array_literal(items: list[Any]) -> str:
    """Return a PostgreSQL array literal of ``items`` whose text needs no quoting (ints, currency codes, 0x hex)."""
    return "{" + ",".join(map(str, items)) + "}"


def _allocations_write(
    created: list[tuple[int, str, str, int]], raised: list[tuple[int, int]]
) -> list[tuple[tuple[int, str, str], int]]:
    """Insert the new allocations and raise the changed ones: one statement each on PostgreSQL.

    Return ``((user_id, currency, address), id)`` of each new allocation. The arrays travel as text literals:
    psycopg adapting 100,000-item Python lists item by item took seconds.
    """
    now = timezone.now()
    if connection.vendor != "postgresql":
        PayoutAllocation.objects.bulk_create(
            [
                PayoutAllocation(user_id=user_id, currency=currency, address=address, cumulative=cumulative)
                for user_id, currency, address, cumulative in created
            ],
            batch_size=1000,
        )
        PayoutAllocation.objects.bulk_update(
            [PayoutAllocation(pk=pk, cumulative=cumulative, updated_at=now) for pk, cumulative in sorted(raised)],
            ["cumulative", "updated_at"],
            batch_size=1000,
        )
        keys = {(user_id, currency, address) for user_id, currency, address, _ in created}
        return [
            ((user_id, currency, address), pk)
            for pk, user_id, currency, address in PayoutAllocation.objects.values_list(
                "pk", "user_id", "currency", "address"
            )
            if (user_id, currency, address) in keys
        ]
    table = PayoutAllocation._meta.db_table
    new_rows: list[tuple[tuple[int, str, str], int]] = []
    with connection.cursor() as cursor:
        if created:
            if not all(_HEX_ADDRESS.fullmatch(row[2]) and row[1].isalnum() for row in created):
                raise ValueError("allocation addresses and currencies must need no quoting in an array literal")
            cursor.execute(
                f"INSERT INTO {table} (user_id, currency, address, cumulative, updated_at) "  # noqa: S608
                "SELECT v.user_id, v.currency, v.address, v.cumulative, %s "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::numeric[]) "
                "AS v(user_id, currency, address, cumulative) RETURNING id, user_id, currency, address",
                [
                    now,
                    _array_literal([row[0] for row in created]),
                    _array_literal([row[1] for row in created]),
                    _array_literal([row[2] for row in created]),
                    _array_literal([row[3] for row in created]),
                ],
            )
            new_rows = [((user_id, currency, address), pk) for pk, user_id, currency, address in cursor.fetchall()]
        if raised:
            raised.sort()
            cursor.execute(
                f"UPDATE {table} AS t SET cumulative = v.cumulative, updated_at = %s "  # noqa: S608
                "FROM unnest(%s::bigint[], %s::numeric[]) AS v(id, cumulative) WHERE t.id = v.id",
                [now, _array_literal([pk for pk, _ in raised]), _array_literal([value for _, value in raised])],
            )
    return new_rows


# --- Posting -----------------------------------------------------------------------------------------


def settlement_batch_final(*, batch: SettlementBatch, conn: ChainConnection | None = None) -> bool:
    """Tell whether ``batch`` is posted with CHAIN_CONFIRMATIONS blocks on top of it (a reorg no longer undoes it)."""
    if batch.status != SettlementBatch.Status.POSTED or batch.block_number is None:
        return False
    conn = conn or chain_connection_get()
    return conn.w3.eth.block_number - batch.block_number >= chain_confirmations(conn)


def _reorg_recheck_locked(conn: ChainConnection) -> None:
    """Re-check every posted batch that is not final yet; one a reorg dropped goes back to be posted again.

    Its transaction is gone from the chain (or sits in another block): the batch returns to `sent` with its
    recorded hash and nonce, so the posting below first looks for a receipt, then for the chain's own
    `BatchPosted`, and only then re-sends the same seq and root with the same nonce.
    """
    try:
        latest = conn.w3.eth.block_number
        confirmations = chain_confirmations(conn)
        recent = SettlementBatch.objects.filter(
            status=SettlementBatch.Status.POSTED, block_number__gt=latest - confirmations
        ).order_by("seq")
        for batch in recent:
            try:
                receipt = conn.w3.eth.get_transaction_receipt(batch.tx_hash)
            except TransactionNotFound:
                receipt = None
            if receipt is not None and receipt["status"] == 1:
                if receipt["blockNumber"] != batch.block_number:
                    batch.block_number = receipt["blockNumber"]
                    with transaction.atomic():
                        batch.save(update_fields=["block_number"])
                continue
            logger.warning(
                "settlement: batch %s's post %s was dropped by a reorg; posting it again", batch.seq, batch.tx_hash
            )
            batch.status = SettlementBatch.Status.SENT
            batch.block_number = None
            batch.last_error = f"post {batch.tx_hash} dropped by a chain reorganisation; re-posting"
            with transaction.atomic():
                batch.save(update_fields=["status", "block_number", "last_error"])
    except CHAIN_DOWN_ERRORS as error:
        # Preparing goes on without the node; the next run with the node back re-checks these batches.
        logger.warning("settlement: chain node unreachable, posted batches not re-checked for reorgs: %s", error)


def _post_locked(conn: ChainConnection, batch: SettlementBatch) -> SettlementBatch:
    if batch.status == SettlementBatch.Status.POSTED:
        return batch
    try:
        if batch.tx_hash and _settle_from_receipt(conn, batch):
            return batch
        chain_seq = conn.settlement.functions.lastSeq().call()
        if chain_seq >= batch.seq:
            return _settle_from_chain(conn, batch)
        if chain_seq != batch.seq - 1:
            message = f"The chain's last batch is {chain_seq} but batch {batch.seq} is next in the database."
            settlement_alert_open(batch, SettlementAlert.Kind.CHAIN_MISMATCH, message, {"chain_last_seq": chain_seq})
            raise ChainMismatch(message)
        return _send(conn, batch)
    except CHAIN_DOWN_ERRORS as error:
        _record_failure(batch, f"chain node unreachable: {error}", alert=False)
        raise ChainUnavailable("The chain node did not answer; the batch will be posted when it is back.") from error


def _settle_from_receipt(conn: ChainConnection, batch: SettlementBatch) -> bool:
    """Mark the batch posted if its recorded transaction was mined successfully; tell whether it was."""
    try:
        receipt = conn.w3.eth.get_transaction_receipt(batch.tx_hash)
    except TransactionNotFound:
        return False
    if receipt["status"] != 1:
        return False
    _mark_posted(batch, tx_hash=batch.tx_hash, block_number=receipt["blockNumber"])
    return True


def _settle_from_chain(conn: ChainConnection, batch: SettlementBatch) -> SettlementBatch:
    """Adopt the chain's BatchPosted event for this seq if it carries this batch's root."""
    events = conn.settlement.events.BatchPosted().get_logs(
        argument_filters={"seq": batch.seq}, from_block=conn.start_block, to_block="latest"
    )
    roots = {HexBytes(event["args"]["root"]).to_0x_hex() for event in events}
    if roots == {batch.root}:
        event = events[-1]
        _mark_posted(batch, tx_hash=event["transactionHash"].to_0x_hex(), block_number=event["blockNumber"])
        return batch
    message = f"The chain holds batch {batch.seq} with root(s) {sorted(roots) or 'unknown'}, not {batch.root}."
    settlement_alert_open(batch, SettlementAlert.Kind.CHAIN_MISMATCH, message, {"chain_roots": sorted(roots)})
    raise ChainMismatch(message)


def _send(conn: ChainConnection, batch: SettlementBatch) -> SettlementBatch:
    w3, operator = conn.w3, conn.operator
    batch.attempts += 1
    confirmed_nonce = w3.eth.get_transaction_count(operator.address, "latest")
    replacing = batch.nonce is not None and batch.nonce >= confirmed_nonce and bool(batch.tx_hash)
    nonce = batch.nonce if replacing else w3.eth.get_transaction_count(operator.address, "pending")
    jct_rewards = int(json.loads(batch.data.content)["jct_rewards"])
    call = conn.settlement.functions.postBatch(
        batch.seq, HexBytes(batch.root), HexBytes("0x" + batch.data_id), jct_rewards
    )
    try:
        params = call.build_transaction({"from": operator.address, "nonce": nonce})
    except ContractLogicError as error:
        _record_failure(batch, f"postBatch would revert: {_revert_reason(conn, error)}")
        raise BatchPostFailed(f"Posting batch {batch.seq} would revert; it will be retried.") from error
    if replacing:
        for fee in ("maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"):
            if fee in params:
                params[fee] = int(params[fee]) * _REPLACEMENT_FEE_FACTOR
    signed = operator.sign_transaction(params)
    _record_sent(batch, tx_hash=HexBytes(signed.hash).to_0x_hex(), nonce=nonce)
    try:
        w3.eth.send_raw_transaction(signed.raw_transaction)
    except Web3RPCError as error:
        _record_failure(batch, f"the node refused postBatch: {error}")
        raise BatchPostFailed(f"The node refused batch {batch.seq}'s transaction; it will be retried.") from error
    return _await_receipt(conn, batch)


def _await_receipt(conn: ChainConnection, batch: SettlementBatch) -> SettlementBatch:
    try:
        receipt = conn.w3.eth.wait_for_transaction_receipt(
            batch.tx_hash, timeout=settings.CHAIN_RECEIPT_TIMEOUT_SECONDS
        )
    except TimeExhausted as error:
        _record_failure(batch, f"transaction {batch.tx_hash} not mined in {settings.CHAIN_RECEIPT_TIMEOUT_SECONDS}s")
        raise BatchPostPending(
            f"Batch {batch.seq}'s transaction is not mined yet; it will be checked again."
        ) from error
    if receipt["status"] != 1:
        _record_failure(batch, f"transaction {batch.tx_hash} reverted")
        raise BatchPostFailed(f"Batch {batch.seq}'s transaction reverted; it will be retried.")
    _mark_posted(batch, tx_hash=batch.tx_hash, block_number=receipt["blockNumber"])
    return batch


def _revert_reason(conn: ChainConnection, error: ContractLogicError) -> str:
    try:
        name, args = decode_custom_error(conn.settlement.abi, error)
    except ValueError:
        return str(error)
    return f"{name}{args}"


def _record_sent(batch: SettlementBatch, *, tx_hash: str, nonce: int) -> None:
    """Commit the transaction hash and nonce before sending, so a crash after sending leaves them behind."""
    batch.status = SettlementBatch.Status.SENT
    batch.tx_hash = tx_hash
    batch.nonce = nonce
    batch.sent_at = timezone.now()
    with transaction.atomic():
        batch.save(update_fields=["status", "tx_hash", "nonce", "attempts", "sent_at"])


def _record_failure(batch: SettlementBatch, error: str, *, alert: bool = True) -> None:
    batch.last_error = error[:2000]
    with transaction.atomic():
        batch.save(update_fields=["last_error", "attempts"])
        if alert:
            settlement_alert_open(
                batch, SettlementAlert.Kind.POST_FAILED, f"Batch {batch.seq}: {error}", {"attempts": batch.attempts}
            )
    logger.warning("settlement: batch %s: %s", batch.seq, error)


def _mark_posted(batch: SettlementBatch, *, tx_hash: str, block_number: int) -> None:
    now = timezone.now()
    batch.status = SettlementBatch.Status.POSTED
    batch.tx_hash = tx_hash
    batch.block_number = block_number
    batch.posted_at = now
    batch.last_error = ""
    with transaction.atomic():
        batch.save(update_fields=["status", "tx_hash", "block_number", "posted_at", "last_error"])
        SettlementAlert.objects.filter(batch=batch, resolved_at__isnull=True).update(resolved_at=now)
    logger.info("settlement: batch %s posted in %s (block %s)", batch.seq, tx_hash, block_number)


def settlement_alert_open(batch: SettlementBatch | None, kind: str, message: str, detail: dict) -> SettlementAlert:
    """Open an alert, or refresh the open one of the same kind for the same batch."""
    with transaction.atomic():
        alert = (
            SettlementAlert.objects.select_for_update()
            .filter(batch=batch, kind=kind, resolved_at__isnull=True)
            .order_by("pk")
            .first()
        )
        if alert is None:
            return SettlementAlert.objects.create(
                batch=batch, kind=kind, message=message, detail={**detail, "occurrences": 1}
            )
        alert.message = message
        alert.detail = {**detail, "occurrences": int(alert.detail.get("occurrences", 1)) + 1}
        alert.save(update_fields=["message", "detail"])
        return alert
