"""Ledger errors."""

from janction.errors import ApplicationError, Conflict, NotFound, Unprocessable, ValidationFailed


class UnknownCurrency(ValidationFailed):
    code = "unknown_currency"


class InvalidAmount(ValidationFailed):
    code = "invalid_amount"


class InsufficientFunds(ApplicationError):
    code = "insufficient_funds"
    status = 409


class UnbalancedTransaction(ApplicationError):
    code = "unbalanced_transaction"
    status = 500


class IdempotencyKeyReused(Unprocessable):
    code = "idempotency_key_reused"


class FaucetDisabled(NotFound):
    code = "faucet_disabled"


class WalletVerificationFailed(ValidationFailed):
    code = "wallet_verification_failed"


class NonceInvalid(ValidationFailed):
    code = "siwe_nonce_invalid"


class WalletTaken(Conflict):
    code = "wallet_already_linked"


class WalletNotFound(NotFound):
    code = "wallet_not_found"


class StakeOnChain(Conflict):
    code = "stake_on_chain"
