"""Settlement errors: the API renders them; the Celery tasks retry the transient ones."""

from janction.errors import ApplicationError, Conflict, NotFound, ValidationFailed


class ChainUnavailable(ApplicationError):
    """The chain node did not answer; the work waits and is retried."""

    code = "chain_unavailable"
    status = 503


class BatchPostFailed(ApplicationError):
    """Posting a batch reverted or could not be sent; it is retried with backoff."""

    code = "batch_post_failed"
    status = 502


class BatchPostPending(ApplicationError):
    """A batch transaction was sent but not mined in time; it is checked again later."""

    code = "batch_post_pending"
    status = 504


class ChainMismatch(ApplicationError):
    """The chain's batch sequence disagrees with the database: an operator must look."""

    code = "chain_mismatch"
    status = 500


class SettlementBusy(Conflict):
    code = "settlement_busy"


class BatchNotFound(NotFound):
    code = "batch_not_found"


class BatchDataNotFound(NotFound):
    code = "batch_data_not_found"


class NoPostedBatch(NotFound):
    code = "no_posted_batch"


class InvalidAddress(ValidationFailed):
    code = "invalid_address"


class InvalidDataHash(ValidationFailed):
    code = "invalid_data_hash"


class TransactionNotSettled(NotFound):
    code = "transaction_not_settled"


class InvalidSlash(ValidationFailed):
    code = "invalid_slash"


class StakeInsufficient(Conflict):
    code = "stake_insufficient"


class SlashRefused(ApplicationError):
    """The contract refused a slash for a reason other than the stake's size (say, the key lacks SLASHER_ROLE)."""

    code = "slash_refused"
    status = 502


class SlashingNotConfigured(ApplicationError):
    """Real mode without CHAIN_SLASHER_KEY: this deployment cannot slash on chain."""

    code = "slashing_not_configured"
    status = 503
