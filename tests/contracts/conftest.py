"""Fixtures for tests against a real Hardhat 2 node and Janction's deployed contracts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

from ledger.chain.artifacts import JCT_CONTRACT, SETTLEMENT_CONTRACT, USDC_CONTRACT
from ledger.chain.client import contract_at, decode_custom_error, deploy_all, send
from ledger.chain.hardhat import HardhatUnavailable, hardhat_node

REPO_ROOT = next(parent for parent in Path(__file__).resolve().parents if (parent / "package.json").is_file())
UNSTAKE_COOLDOWN_SECONDS = 3 * 24 * 60 * 60
ACCOUNT_BALANCE_WEI = 10**21


@pytest.fixture(scope="session")
def hardhat_w3() -> Iterator[Web3]:
    """Start `npx hardhat node` on a free loopback port and yield a Web3 talking to it over HTTP."""
    try:
        with hardhat_node(root=REPO_ROOT) as w3:
            yield w3
    except HardhatUnavailable as exc:
        pytest.fail(str(exc))


def funded_account(w3: Web3, name: str) -> LocalAccount:
    """Return the account whose key derives from ``name``, given enough ether for gas."""
    account = Account.from_key(keccak(text=f"janction-test:{name}"))
    w3.provider.make_request("hardhat_setBalance", [account.address, hex(ACCOUNT_BALANCE_WEI)])
    return account


@dataclass(frozen=True)
class SettlementChain:
    """Deployed tokens and Settlement plus the accounts that act on them."""

    w3: Web3
    admin: LocalAccount
    operator: LocalAccount
    alice: LocalAccount
    bob: LocalAccount
    carol: LocalAccount
    outsider: LocalAccount
    slasher: LocalAccount
    usdc: Contract
    jct: Contract
    settlement: Contract

    def send(self, sender: LocalAccount, call: ContractFunction) -> TxReceipt:
        """Send ``call`` signed by ``sender`` and return its receipt."""
        return send(self.w3, sender, call)

    def assert_reverts(self, sender: LocalAccount, call: ContractFunction, error: str, *args: Any) -> None:
        """Assert that sending ``call`` as ``sender`` reverts with custom error ``error(*args)``."""
        with pytest.raises(ContractLogicError) as excinfo:
            self.send(sender, call)
        abi = [*self.settlement.abi, *self.usdc.abi]
        assert decode_custom_error(abi, excinfo.value) == (error, args)

    def mint(self, token: Contract, to: str, amount: int) -> None:
        """Mint ``amount`` base units of ``token`` to ``to``."""
        self.send(self.admin, token.functions.mint(to, amount))

    def advance_time(self, seconds: int) -> None:
        """Move the chain's clock ``seconds`` forward and mine a block there."""
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    def latest_timestamp(self) -> int:
        """Return the timestamp of the latest block."""
        return self.w3.eth.get_block("latest")["timestamp"]


@pytest.fixture(scope="session")
def deployed_chain(hardhat_w3: Web3) -> SettlementChain:
    """Deploy the tokens and Settlement once per session with deploy_all."""
    w3 = hardhat_w3
    admin = funded_account(w3, "admin")
    operator = funded_account(w3, "operator")
    slasher = funded_account(w3, "slasher")
    addresses = deploy_all(
        w3, admin, operator=operator.address, slasher=slasher.address, unstake_cooldown=UNSTAKE_COOLDOWN_SECONDS
    )
    return SettlementChain(
        w3=w3,
        admin=admin,
        operator=operator,
        alice=funded_account(w3, "alice"),
        bob=funded_account(w3, "bob"),
        carol=funded_account(w3, "carol"),
        outsider=funded_account(w3, "outsider"),
        slasher=slasher,
        usdc=contract_at(w3, USDC_CONTRACT, addresses.usdc),
        jct=contract_at(w3, JCT_CONTRACT, addresses.jct),
        settlement=contract_at(w3, SETTLEMENT_CONTRACT, addresses.settlement),
    )


@pytest.fixture
def chain(deployed_chain: SettlementChain) -> Iterator[SettlementChain]:
    """Yield the deployed contracts and roll the node back to their fresh state after the test."""
    snapshot = deployed_chain.w3.provider.make_request("evm_snapshot", [])["result"]
    yield deployed_chain
    assert deployed_chain.w3.provider.make_request("evm_revert", [snapshot])["result"] is True
