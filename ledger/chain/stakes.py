"""Slash JCT stake on the Settlement contract and find past slashes (no Django)."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract

from ledger.chain.client import send


def slash(
    w3: Web3, slasher: LocalAccount, settlement: Contract, *, account: str, amount: int, evidence: bytes
) -> HexBytes:
    """Send `slash(account, amount, evidence)` signed by ``slasher``; return the mined transaction's hash.

    The node estimates gas first, so a slash the contract refuses raises ContractLogicError before sending.
    """
    call = settlement.functions.slash(Web3.to_checksum_address(account), amount, evidence)
    return HexBytes(send(w3, slasher, call)["transactionHash"])


def slash_transaction(w3: Web3, settlement: Contract, *, evidence: bytes, from_block: int = 0) -> HexBytes | None:
    """Return the hash of the transaction whose StakeSlashed carries ``evidence``, or None if there is none."""
    event = settlement.events.StakeSlashed()
    logs = w3.eth.get_logs(
        {
            "address": settlement.address,
            "topics": [HexBytes(event.topic).to_0x_hex(), None, "0x" + evidence.hex()],
            "fromBlock": from_block,
            "toBlock": "latest",
        }
    )
    return HexBytes(logs[-1]["transactionHash"]) if logs else None


def stake_of(settlement: Contract, account: str) -> tuple[int, int]:
    """Return ``account``'s active stake and pending unstake as the contract holds them now."""
    address = Web3.to_checksum_address(account)
    staked = settlement.functions.stakeOf(address).call()
    pending, _unlock_at = settlement.functions.pendingUnstakeOf(address).call()
    return staked, pending
