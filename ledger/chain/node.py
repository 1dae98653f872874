"""Connect to the settlement chain: a JSON-RPC node (real mode) or the in-process eth-tester chain (embedded)."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.contract import Contract

from ledger.chain.artifacts import JCT_CONTRACT, SETTLEMENT_CONTRACT, USDC_CONTRACT
from ledger.chain.client import contract_at, deploy_all

EMBEDDED_LABEL = "embedded in-process test chain (fake)"
# Ether the embedded operator gets from eth-tester's pre-funded account, for gas.
_EMBEDDED_OPERATOR_WEI = 10**21
_embedded_lock = threading.Lock()


class ChainConfigError(ValueError):
    """The chain settings cannot work: a malformed key, address or URL."""


@dataclass(frozen=True)
class ChainConfig:
    """What real mode needs to reach the node and the deployed contracts."""

    rpc_url: str
    operator_key: str
    settlement_address: str
    usdc_address: str
    jct_address: str
    request_timeout_seconds: int = 30
    # Hex private key holding SLASHER_ROLE; empty: this deployment cannot slash.
    slasher_key: str = ""


@dataclass(frozen=True)
class ChainConnection:
    """A Web3 bound to the Settlement contract and the two tokens, with the operator's signing account."""

    w3: Web3
    operator: LocalAccount
    settlement: Contract
    usdc: Contract
    jct: Contract
    embedded: bool
    label: str
    start_block: int = 0
    slasher: LocalAccount | None = None

    @functools.cached_property
    def chain_id(self) -> int:
        """Return the chain id, asked of the node once."""
        return self.w3.eth.chain_id


def operator_account(key: str, *, role: str = "operator") -> LocalAccount:
    """Return the signing account of hex private key ``key``, or raise ChainConfigError."""
    try:
        return Account.from_key(key)
    except (ValueError, TypeError) as error:
        raise ChainConfigError(f"the {role} key is not a 32-byte hex private key") from error


def provider_for(url: str, *, timeout_seconds: int = 30) -> HTTPProvider:
    """Return the web3 provider for an http(s):// node URL, or raise ChainConfigError."""
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise ChainConfigError(f"{url!r} is not an http:// or https:// JSON-RPC URL")
    return HTTPProvider(url, request_kwargs={"timeout": timeout_seconds})


def connect_rpc(config: ChainConfig, *, start_block: int = 0) -> ChainConnection:
    """Bind to the contracts at ``config``'s addresses on its node (no request is made yet)."""
    w3 = Web3(provider_for(config.rpc_url, timeout_seconds=config.request_timeout_seconds))
    for name, address in (
        ("settlement", config.settlement_address),
        ("USDC", config.usdc_address),
        ("JCT", config.jct_address),
    ):
        if not Web3.is_address(address):
            raise ChainConfigError(f"the {name} address {address!r} is not an EVM address")
    return ChainConnection(
        w3=w3,
        operator=operator_account(config.operator_key),
        settlement=contract_at(w3, SETTLEMENT_CONTRACT, config.settlement_address),
        usdc=contract_at(w3, USDC_CONTRACT, config.usdc_address),
        jct=contract_at(w3, JCT_CONTRACT, config.jct_address),
        embedded=False,
        label=f"JSON-RPC node {config.rpc_url.split('?')[0]}",
        start_block=start_block,
        slasher=operator_account(config.slasher_key, role="slasher") if config.slasher_key else None,
    )


def connect_embedded() -> ChainConnection:
    """Return the process-wide in-process chain, deploying the tokens and Settlement on first use."""
    with _embedded_lock:
        return _embedded()


@functools.cache
def _embedded() -> ChainConnection:
    w3 = Web3(EthereumTesterProvider())
    operator = Account.from_key(keccak(text="janction-embedded-operator"))
    slasher = Account.from_key(keccak(text="janction-embedded-slasher"))
    for account in (operator, slasher):
        w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address, "value": _EMBEDDED_OPERATOR_WEI})
    addresses = deploy_all(w3, operator, slasher=slasher.address)
    return ChainConnection(
        w3=w3,
        operator=operator,
        settlement=contract_at(w3, SETTLEMENT_CONTRACT, addresses.settlement),
        usdc=contract_at(w3, USDC_CONTRACT, addresses.usdc),
        jct=contract_at(w3, JCT_CONTRACT, addresses.jct),
        embedded=True,
        label=EMBEDDED_LABEL,
        slasher=slasher,
    )
