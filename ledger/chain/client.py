"""Deploy Janction's contracts and send signed transactions to them with web3.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import function_abi_to_4byte_selector, get_abi_input_types, to_bytes, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxParams, TxReceipt

from ledger.chain.artifacts import JCT_CONTRACT, SETTLEMENT_CONTRACT, USDC_CONTRACT, load_artifact

DEFAULT_UNSTAKE_COOLDOWN_SECONDS = 7 * 24 * 60 * 60
# JCT a development chain may emit per second: far above any schedule, so tests never wait for it to accrue.
DEVELOPMENT_JCT_EMISSION_PER_SECOND = 10**24
RECEIPT_TIMEOUT_SECONDS = 120


class TransactionReverted(Exception):
    """A transaction was mined but reverted."""

    def __init__(self, tx_hash: HexBytes) -> None:
        super().__init__(f"transaction {tx_hash.to_0x_hex()} reverted")
        self.tx_hash = tx_hash


@dataclass(frozen=True)
class Addresses:
    """Where deploy_all put the tokens and the settlement contract."""

    usdc: ChecksumAddress
    jct: ChecksumAddress
    settlement: ChecksumAddress


def contract_at(w3: Web3, name: str, address: str) -> Contract:
    """Bind the ABI of contract ``name`` to ``address``."""
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)


def send(
    w3: Web3, sender: LocalAccount, call: ContractFunction | ContractConstructor, *, gas: int | None = None
) -> TxReceipt:
    """Sign ``call`` as ``sender``, send it, wait for it to be mined and return its successful receipt.

    Without ``gas`` the node estimates it, so a call that would revert raises ContractLogicError before sending.
    """
    params: TxParams = {"from": sender.address, "nonce": w3.eth.get_transaction_count(sender.address, "pending")}
    if gas is not None:
        params["gas"] = gas
    transaction = call.build_transaction(params)
    tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(transaction).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_SECONDS)
    if receipt["status"] != 1:
        raise TransactionReverted(tx_hash)
    return receipt


def deploy(w3: Web3, deployer: LocalAccount, name: str, *constructor_args: Any) -> Contract:
    """Deploy contract ``name`` from ``deployer`` and return it bound to its new address."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = send(w3, deployer, factory.constructor(*constructor_args))
    return contract_at(w3, name, receipt["contractAddress"])


def deploy_all(
    w3: Web3,
    deployer: LocalAccount,
    *,
    operator: str | None = None,
    guardian: str | None = None,
    slasher: str | None = None,
    unstake_cooldown: int = DEFAULT_UNSTAKE_COOLDOWN_SECONDS,
    claim_delay: int = 0,
    jct_emission_per_second: int = DEVELOPMENT_JCT_EMISSION_PER_SECOND,
    start_seq: int = 0,
) -> Addresses:
    """Deploy TestUSDC, JCT and Settlement on a development chain, with both tokens allowed for deposits.

    ``deployer`` becomes the admin and minter of everything; ``operator`` (default: the deployer) posts batches,
    ``guardian`` (default: the deployer) pauses and rejects them, ``slasher`` (default: nobody; the admin may
    grant SLASHER_ROLE later) slashes stake to the treasury (the deployer); Settlement may emit JCT rewards on schedule.
    ``start_seq`` is the last batch seq of a deployment this one replaces (its first batch is ``start_seq + 1``).
    """
    usdc = deploy(w3, deployer, USDC_CONTRACT, deployer.address)
    jct = deploy(w3, deployer, JCT_CONTRACT, deployer.address, jct_emission_per_second)
    settlement = deploy(
        w3,
        deployer,
        SETTLEMENT_CONTRACT,
        deployer.address,
        operator or deployer.address,
        guardian or deployer.address,
        jct.address,
        unstake_cooldown,
        claim_delay,
        start_seq,
    )
    for token in (usdc, jct):
        send(w3, deployer, settlement.functions.setTokenAllowed(token.address, True))
    send(w3, deployer, jct.functions.grantRole(jct.functions.EMITTER_ROLE().call(), settlement.address))
    if slasher is not None:
        send(w3, deployer, settlement.functions.grantRole(settlement.functions.SLASHER_ROLE().call(), slasher))
    return Addresses(usdc=usdc.address, jct=jct.address, settlement=settlement.address)


def decode_custom_error(abi: Sequence[dict[str, Any]], error: ContractLogicError) -> tuple[str, tuple[Any, ...]]:
    """Return the name and arguments of the custom error in ``abi`` that ``error`` carries."""
    data = error.data.get("data") if isinstance(error.data, dict) else error.data
    revert_data = to_bytes(hexstr=data) if isinstance(data, str) else b""
    for entry in abi:
        if entry["type"] == "error" and function_abi_to_4byte_selector(entry) == revert_data[:4]:
            types = get_abi_input_types(entry)
            args = decode(types, revert_data[4:])
            return entry["name"], tuple(
                to_checksum_address(arg) if abi_type == "address" else arg
                for abi_type, arg in zip(types, args, strict=True)
            )
    raise ValueError(f"no custom error in the ABI matches revert data {data!r}") from error
