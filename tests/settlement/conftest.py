"""Fixtures for settlement tests: Janction pointed at a real Hardhat node, a buyer and a provider."""

import pytest

import tests.contracts.conftest as contract_fixtures
from tests.factories import UserFactory
from tests.settlement.helpers import CONFIRMATIONS, Market, link_wallet

# The Hardhat node and the deployed contracts of the contract tests.
hardhat_w3 = contract_fixtures.hardhat_w3
deployed_chain = contract_fixtures.deployed_chain
chain = contract_fixtures.chain


@pytest.fixture
def live(settings, chain):
    """Point Janction's chain settings at the Hardhat node and the freshly deployed contracts."""
    settings.CHAIN_RPC_URL = chain.w3.provider.endpoint_uri
    settings.CHAIN_OPERATOR_KEY = chain.operator.key.to_0x_hex()
    settings.CHAIN_SETTLEMENT_ADDRESS = chain.settlement.address
    settings.CHAIN_USDC_ADDRESS = chain.usdc.address
    settings.CHAIN_JCT_ADDRESS = chain.jct.address
    settings.CHAIN_START_BLOCK = 0
    settings.CHAIN_CONFIRMATIONS = CONFIRMATIONS
    settings.CHAIN_RECEIPT_TIMEOUT_SECONDS = 10
    return chain


@pytest.fixture
def market(db, live):
    """A buyer and a provider whose wallet is the Hardhat account alice."""
    provider = UserFactory()
    link_wallet(provider, live.alice.address)
    return Market(buyer=UserFactory(), provider=provider)
