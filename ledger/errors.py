"""Ledger errors."""

from janction.errors import ApplicationError, NotFound, Unprocessable, ValidationFailed


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
