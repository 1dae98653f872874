"""JCT stake on the Settlement contract: slash it (SLASHER_ROLE) and read it, for the reputation app's slash service."""

from __future__ import annotations

import logging
import threading

from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from ledger.chain.client import TransactionReverted, decode_custom_error
from ledger.chain.node import ChainConnection
from ledger.chain.stakes import slash, slash_transaction, stake_of
from ledger.settlement.connection import CHAIN_DOWN_ERRORS, chain_connection_get
from ledger.settlement.errors import (
    ChainUnavailable,
    InvalidSlash,
    SlashingNotConfigured,
    SlashRefused,
    StakeInsufficient,
)

logger = logging.getLogger(__name__)

_UINT256_MAX = 2**256 - 1
_send_lock = threading.Lock()


def slash_onchain(*, account: str, amount: int, evidence: bytes) -> str:
    """Slash ``amount`` JCT base units of ``account``'s stake (active first, then pending unstake); return the tx hash.

    ``evidence`` (32 bytes) is the slash's idempotency key on chain: the contract slashes once per evidence, and
    calling this again with the same evidence returns the hash of the slash already mined instead of slashing twice.
    Blocks until the transaction is mined. Call it outside a database transaction (or in ``on_commit``).
    """
    if not isinstance(account, str) or not Web3.is_address(account):
        raise InvalidSlash(f"{account!r} is not an EVM address.", detail={"field": "account"})
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= _UINT256_MAX:
        raise InvalidSlash("The amount must be a positive integer of JCT base units.", detail={"field": "amount"})
    if not isinstance(evidence, bytes) or len(evidence) != 32 or evidence == bytes(32):
        raise InvalidSlash("The evidence must be 32 bytes, not all zero (a hash).", detail={"field": "evidence"})
    conn = chain_connection_get()
    if conn.slasher is None:
        raise SlashingNotConfigured("Set CHAIN_SLASHER_KEY to the key holding SLASHER_ROLE to slash on chain.")
    address = Web3.to_checksum_address(account)
    try:
        with _send_lock:  # one nonce sequence for the slasher key in this process
            try:
                tx_hash = slash(
                    conn.w3, conn.slasher, conn.settlement, account=address, amount=amount, evidence=evidence
                )
            except ContractLogicError as error:
                name, args = _custom_error(conn.settlement.abi, error)
                earlier = _earlier_slash(conn, evidence) if name == "EvidenceUsed" else None
                if earlier is not None:
                    return earlier
                if name == "InsufficientStake":
                    raise StakeInsufficient(
                        f"{address} has {args[0]} JCT base units staked or pending unstake, less than {amount}.",
                        detail={"staked": str(args[0]), "requested": str(args[1])},
                    ) from None
                raise SlashRefused(
                    f"The Settlement contract refused the slash: {name}{args}.", detail={"error": name}
                ) from None
            except (TransactionReverted, Web3RPCError) as error:
                # Another process slashed for this evidence between our estimate and our send (the transaction
                # reverted with EvidenceUsed), or took the nonce: the slash that got there is the answer.
                earlier = _earlier_slash(conn, evidence)
                if earlier is not None:
                    return earlier
                raise SlashRefused(f"The slash transaction failed: {error}.") from None
    except CHAIN_DOWN_ERRORS as error:
        raise ChainUnavailable(
            "The chain node did not answer; retry the slash later with the same evidence."
        ) from error
    logger.info("stake: slashed %s JCT base units of %s (evidence %s) in %s", amount, address, evidence.hex(), tx_hash)
    return tx_hash.to_0x_hex()


def _earlier_slash(conn: ChainConnection, evidence: bytes) -> str | None:
    """Return the hash of the slash already made for ``evidence``, or None."""
    if not conn.settlement.functions.slashedEvidence(evidence).call():
        return None
    earlier = slash_transaction(conn.w3, conn.settlement, evidence=evidence, from_block=conn.start_block)
    return None if earlier is None else earlier.to_0x_hex()


def stake_onchain(*, account: str) -> tuple[int, int]:
    """Return ``account``'s active stake and pending unstake read from the contract now (no confirmations)."""
    if not isinstance(account, str) or not Web3.is_address(account):
        raise InvalidSlash(f"{account!r} is not an EVM address.", detail={"field": "account"})
    conn = chain_connection_get()
    try:
        return stake_of(conn.settlement, account)
    except CHAIN_DOWN_ERRORS as error:
        raise ChainUnavailable("The chain node did not answer; try again later.") from error


def _custom_error(abi, error: ContractLogicError) -> tuple[str, tuple]:
    try:
        return decode_custom_error(abi, error)
    except ValueError:
        return str(error), ()
