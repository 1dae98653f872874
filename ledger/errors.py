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


class AccountNotFound(NotFound):
    code = "account_not_found"


class FaucetDisabled(NotFound):
    code = "faucet_disabled"


__all__ = ["Conflict"]
