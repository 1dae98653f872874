"""Helpers for settlement tests: wallets, mining, and a buyer/provider pair that generates earnings."""

from __future__ import annotations

from dataclasses import dataclass

from web3 import Web3

from ledger.chain.hardhat import HARDHAT_CHAIN_ID
from ledger.currencies import Currency
from ledger.models import Wallet
from ledger.services import ledger_charge, ledger_deposit, ledger_hold
from ledger.settlement.leaves import unpack
from tests.contracts.conftest import SettlementChain

CONFIRMATIONS = 2


def link_wallet(user, address: str) -> Wallet:
    """Link ``address`` to ``user`` as if they had signed a SIWE message."""
    return Wallet.objects.create(user=user, address=Web3.to_checksum_address(address), chain_id=HARDHAT_CHAIN_ID)


def mine(chain: SettlementChain, blocks: int) -> None:
    """Mine ``blocks`` empty blocks."""
    chain.w3.provider.make_request("hardhat_mine", [hex(blocks)])


@dataclass
class Market:
    """A buyer with money and a provider with a linked wallet, and a way to charge one for the other."""

    buyer: object
    provider: object
    charges: int = 0

    def charge(self, amount: int, currency: str = Currency.USDC, *, fund: bool = True) -> int:
        """Hold and charge ``amount`` base units (depositing them first if ``fund``); return the provider's cut."""
        self.charges += 1
        key = f"test-charge-{self.buyer.pk}-{self.charges}"
        if fund:
            ledger_deposit(user_id=self.buyer.pk, currency=currency, amount=amount, idempotency_key=f"{key}-dep")
        ledger_hold(user_id=self.buyer.pk, currency=currency, amount=amount, idempotency_key=f"{key}-hold")
        result = ledger_charge(
            buyer_id=self.buyer.pk,
            provider_id=self.provider.pk,
            currency=currency,
            buyer_amount=amount,
            idempotency_key=key,
        )
        return sum(
            int(entry.amount)
            for entry in result.transaction.entries.all()
            if entry.account.owner_id == self.provider.pk
        )


def leaf_amounts(content: dict) -> list[list]:
    """Return a DA copy's packed leaves as [index, token, account, cumulative as a string], checksummed."""
    return [
        [leaf.index, Web3.to_checksum_address(leaf.token), Web3.to_checksum_address(leaf.account), str(leaf.cumulative)]
        for leaf in map(unpack, content["leaves"])
    ]


def claim_call(settlement, row: dict):
    """Return Settlement.claim of a proof endpoint row (its packed leaf words and proof)."""
    return settlement.functions.claim(*(int(word) for word in row["leaf"]), row["proof"])
