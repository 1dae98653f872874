"""The embedded demo chain's server-side claim: its chain has no RPC endpoint a browser wallet could reach.

In real mode a provider claims from their own wallet (the Payouts page verifies the proof in the browser and
sends `claim` through EIP-1193); the server never sends claims there.
"""

from __future__ import annotations

import logging
import threading

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from web3.exceptions import ContractLogicError

from janction.errors import ApplicationError, Conflict, PermissionDenied, ValidationFailed
from ledger.chain.client import send
from ledger.chain.node import ChainConnection
from ledger.settlement.connection import chain_connection_get
from ledger.settlement.selectors import proofs_for_user
from ledger.watcher import chain_watch_scan

logger = logging.getLogger(__name__)

# Ether the embedded claimer keeps for gas; it is topped up from eth-tester's pre-funded account.
_CLAIMER_WEI = 10**20
_claimer_lock = threading.Lock()


class ServerClaimRefused(PermissionDenied):
    code = "server_claim_refused"


class NothingToClaim(Conflict):
    code = "nothing_to_claim"


class UnknownClaimCurrency(ValidationFailed):
    code = "unknown_currency"


def _embedded_claimer(conn: ChainConnection) -> LocalAccount:
    """The account that sends demo claims (call with ``_claimer_lock`` held): not the operator, whose nonces the
    batch poster manages."""
    claimer = Account.from_key(keccak(text="janction-embedded-claimer"))
    if conn.w3.eth.get_balance(claimer.address) < _CLAIMER_WEI // 2:
        funder = conn.w3.eth.accounts[0]
        conn.w3.eth.send_transaction({"from": funder, "to": claimer.address, "value": _CLAIMER_WEI})
    return claimer


def settlement_claim_send_embedded(*, user_id: int, account: str, currency: str) -> dict:
    """Send the claim of ``user_id``'s ``currency`` leaf for ``account`` on the embedded chain; return what it paid.

    Anyone may submit a claim and it always pays the leaf's account, so the server paying the gas changes nothing
    but who pays it. Refused in real mode, for an address that is not the caller's, and when nothing is owed.
    """
    conn = chain_connection_get()
    if not conn.embedded:
        raise ServerClaimRefused("Claims are sent from your own wallet on this chain; the server sends none.")
    rows = proofs_for_user(user_id=user_id, address=account)["leaves"]
    row = next((row for row in rows if row["currency"] == currency), None)
    if row is None:
        currencies = sorted({row["currency"] for row in rows})
        raise UnknownClaimCurrency(
            f"{account} has no {currency!r} leaf in the claimable batch; choose one of {currencies or 'none'}.",
            detail={"field": "currency"},
        )
    if int(row["claimable_amount"]) == 0:
        raise NothingToClaim(f"{account} has already claimed all of its {currency} in the claimable batch.")
    call = conn.settlement.functions.claim(*(int(word) for word in row["leaf"]), row["proof"])
    with _claimer_lock:  # one nonce sequence for the claimer
        try:
            receipt = send(conn.w3, _embedded_claimer(conn), call)
        except (ContractLogicError, TransactionFailed) as error:  # a concurrent claim got there first
            raise NothingToClaim(f"The contract refused the claim ({error}); reload to see what is left.") from None
    tx_hash = receipt["transactionHash"].to_0x_hex()
    try:  # book it now rather than at the watcher's next scan (the embedded chain needs no confirmations)
        chain_watch_scan()
    except ApplicationError as error:
        logger.warning("settlement: the watcher will book demo claim %s later: %s", tx_hash, error.message)
    logger.info("settlement: demo claim of %s %s for %s in %s", row["claimable_amount"], currency, account, tx_hash)
    return {"tx_hash": tx_hash, "amount": row["claimable_amount"], "currency": currency, "account": row["account"]}
