"""Demo-only actions of the embedded default: demo money from the faucet and a wallet whose key the server makes."""

import uuid

from django.conf import settings
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct

from janction.errors import Conflict, NotFound
from ledger.currencies import to_base_units
from ledger.models import TransactionKind, Wallet
from ledger.services import ledger_deposit
from ledger.wallets import wallet_challenge_create, wallet_link

DEMO_FAUCET_CURRENCY = "USDC"
DEMO_FAUCET_AMOUNT = "100"
# Each press links a new wallet; this many is plenty to try payouts and keeps a button from filling the table.
DEMO_WALLETS_MAX = 3


class DemoDisabled(NotFound):
    code = "demo_disabled"


class DemoWalletLimit(Conflict):
    code = "demo_wallet_limit"


def _require_embedded() -> None:
    if not settings.JANCTION_EMBEDDED:
        raise DemoDisabled("Demo actions exist only in the embedded default (make run).")


def demo_faucet_credit(*, user, token: str) -> int:
    """Credit 100 demo USDC once per form token (a resubmitted form replays); return the base units credited."""
    _require_embedded()
    token = str(uuid.UUID(token))  # ValueError for anything but a UUID; one spelling per token
    amount = to_base_units(DEMO_FAUCET_AMOUNT, DEMO_FAUCET_CURRENCY)
    ledger_deposit(
        user_id=user.pk,
        currency=DEMO_FAUCET_CURRENCY,
        amount=amount,
        idempotency_key=f"page:{user.pk}:faucet:{token}",
        kind=TransactionKind.FAUCET,
        memo="Demo faucet (not real money)",
    )
    return amount


def demo_wallet_link(*, user) -> Wallet:
    """Link a fresh wallet through the real SIWE path, signed here with a key that is then thrown away."""
    _require_embedded()
    if Wallet.objects.filter(user=user).count() >= DEMO_WALLETS_MAX:
        raise DemoWalletLimit(
            f"You already have {DEMO_WALLETS_MAX} linked wallets; unlink one (DELETE /api/v1/wallets/<id>/) first."
        )
    account = EthAccount.create()
    challenge = wallet_challenge_create(user=user, address=account.address)
    signed = EthAccount.sign_message(encode_defunct(text=challenge.message), private_key=account.key)
    return wallet_link(user=user, message=challenge.message, signature="0x" + signed.signature.hex().removeprefix("0x"))
