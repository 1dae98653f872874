"""Double-entry ledger: accounts, transactions and their entries in integer base units, settlement, payout wallets."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from ledger.currencies import Currency
from ledger.fields import BaseUnitsField


class AccountKind(models.TextChoices):
    AVAILABLE = "available", "Available"
    ESCROW = "escrow", "Escrow"
    EARNINGS = "earnings", "Earnings"
    FEES = "fees", "Platform fees"
    MARKET = "market", "Platform market"
    REWARDS_POOL = "rewards_pool", "Rewards pool"
    CHAIN_CLEARING = "chain_clearing", "Chain clearing"
    # Ledger-level JCT stake (the embedded default's stand-in for the on-chain stake): staked, and unstaking
    # (requested, waiting out the cool-down, still slashable); slashed stake goes to the platform's account.
    STAKE = "stake", "Stake"
    UNSTAKING = "unstaking", "Unstaking (cool-down)"
    SLASHED = "slashed", "Slashed stake"


# The accounts every user has from the start; stake accounts appear on first use.
BASIC_USER_KINDS = (AccountKind.AVAILABLE, AccountKind.ESCROW, AccountKind.EARNINGS)
USER_KINDS = (*BASIC_USER_KINDS, AccountKind.STAKE, AccountKind.UNSTAKING)
PLATFORM_KINDS = (
    AccountKind.FEES,
    AccountKind.MARKET,
    AccountKind.REWARDS_POOL,
    AccountKind.CHAIN_CLEARING,
    AccountKind.SLASHED,
)


class Account(models.Model):
    """A balance in one currency: a user's (available, escrow, earnings) or the platform's."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_accounts"
    )
    kind = models.CharField(max_length=20, choices=AccountKind.choices)
    currency = models.CharField(max_length=8, choices=Currency.choices)
    balance = BaseUnitsField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "kind", "currency"], name="ledger_account_unique_per_owner"),
            models.UniqueConstraint(
                fields=["kind", "currency"], condition=Q(owner__isnull=True), name="ledger_account_unique_platform"
            ),
            # A user's money can never go negative; platform accounts (market, chain clearing) may.
            models.CheckConstraint(
                condition=Q(owner__isnull=True) | Q(balance__gte=0), name="ledger_account_user_balance_non_negative"
            ),
            models.CheckConstraint(
                condition=(Q(owner__isnull=True) & Q(kind__in=PLATFORM_KINDS))
                | (Q(owner__isnull=False) & Q(kind__in=USER_KINDS)),
                name="ledger_account_kind_matches_owner",
            ),
        ]

    def __str__(self) -> str:
        who = (self.owner_id and f"user {self.owner_id}") or "platform"
        return f"{who} {self.kind} {self.currency}"


class TransactionKind(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    FAUCET = "faucet", "Demo faucet deposit"
    HOLD = "hold", "Escrow hold"
    RELEASE = "release", "Escrow release"
    CHARGE = "charge", "Usage charge"
    TRANSFER = "transfer", "Transfer"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    REWARD = "reward", "Reward"
    STAKE = "stake", "Stake"
    UNSTAKE = "unstake", "Unstake request"
    UNSTAKE_RELEASE = "unstake_release", "Unstake release"
    SLASH = "slash", "Stake slash"


class Transaction(models.Model):
    """One atomic posting; its entries sum to zero per currency."""

    kind = models.CharField(max_length=20, choices=TransactionKind.choices)
    idempotency_key = models.CharField(max_length=200, unique=True)
    # SHA-256 of the kind and legs: a reused key with different legs is refused, not replayed.
    fingerprint = models.CharField(max_length=64)
    memo = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class Entry(models.Model):
    """One leg of a transaction: a signed amount on one account."""

    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    currency = models.CharField(max_length=8, choices=Currency.choices)
    amount = BaseUnitsField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name_plural = "entries"
        indexes = [models.Index(fields=["account", "-created_at"], name="ledger_entry_account_time")]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="ledger_entry_amount_non_zero")]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} on account {self.account_id}"


class IdempotencyRecord(models.Model):
    """The first response to a money-moving request, replayed for retries with the same Idempotency-Key."""

    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", "In flight"
        COMPLETED = "completed", "Completed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="idempotency_records")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_hash = models.CharField(max_length=64)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_FLIGHT)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="ledger_idempotency_unique_per_user")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"


# --- On-chain settlement -------------------------------------------------------------------------

_ADDRESS = {"max_length": 42}
_HASH = {"max_length": 66}


class BatchData(models.Model):
    """The data-availability copy of a settlement batch, addressed by the SHA-256 of its canonical JSON."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    content = models.TextField(help_text="Canonical JSON (sorted keys, no spaces) whose SHA-256 is the key.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "batch data"

    def __str__(self) -> str:
        return self.sha256


class SettlementBatch(models.Model):
    """One Merkle root of cumulative amounts owed, posted on chain as `postBatch(seq, root, dataHash)`."""

    class Status(models.TextChoices):
        PREPARED = "prepared", "Prepared"
        SENT = "sent", "Sent, awaiting receipt"
        POSTED = "posted", "Posted"
        # The guardian rejected the posted root before it became claimable (`BatchRejected` on chain).
        REJECTED = "rejected", "Rejected by the guardian"

    seq = models.PositiveBigIntegerField(unique=True)
    root = models.CharField(**_HASH)
    data = models.ForeignKey(BatchData, on_delete=models.PROTECT, related_name="batches")
    # Secret (hex) from which each covered transaction's commitment salt is derived; never published.
    # Empty for batches of DA version 1, which published unsalted fingerprints.
    commitment_key = models.CharField(max_length=64, blank=True, default="", editable=False)
    # Ledger transactions with first_transaction_id <= id <= last_transaction_id are this batch's.
    first_transaction_id = models.BigIntegerField()
    last_transaction_id = models.BigIntegerField()
    transaction_count = models.PositiveIntegerField()
    leaf_count = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PREPARED)
    nonce = models.PositiveBigIntegerField(null=True, blank=True)
    tx_hash = models.CharField(blank=True, **_HASH)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    posted_at = models.DateTimeField(null=True, blank=True)
    rejected_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "settlement batches"
        constraints = [models.CheckConstraint(condition=Q(seq__gte=1), name="ledger_batch_seq_positive")]

    def __str__(self) -> str:
        return f"batch {self.seq} ({self.status})"


class PayoutAllocation(models.Model):
    """The cumulative amount of one currency published for one user at one address.

    A user's earnings go to their first linked wallet; what was published for an address they no longer
    use stays frozen there (still claimable by it), so the sum over a user's addresses is what they earned.
    """

    # No index of its own: ledger_payout_unique (user, currency, address) serves lookups by user, and every index
    # is written for each of a batch's new allocations (100,000 at once in benchmarks/settlement_build_bench.py).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payout_allocations", db_index=False
    )
    currency = models.CharField(max_length=8, choices=Currency.choices)
    address = models.CharField(**_ADDRESS)
    cumulative = BaseUnitsField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "currency", "address"], name="ledger_payout_unique"),
            models.CheckConstraint(condition=Q(cumulative__gte=0), name="ledger_payout_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.cumulative} {self.currency} for user {self.user_id} at {self.address}"


class SettlementAlert(models.Model):
    """Something in settlement an operator must look at: a failed or stuck post, an unmatched claim."""

    class Kind(models.TextChoices):
        POST_FAILED = "post_failed", "Batch post failed"
        CHAIN_MISMATCH = "chain_mismatch", "Chain disagrees with the database"
        UNKNOWN_TOKEN = "unknown_token", "Event for an unknown token"
        CLAIM_UNMATCHED = "claim_unmatched", "Claim by an unknown address"
        CLAIM_UNBALANCED = "claim_unbalanced", "Claim exceeds recorded earnings"
        # Open while posting is held: resolving it (after finding why) lets the next batch carry the amounts.
        BATCH_REJECTED = "batch_rejected", "Batch rejected by the guardian"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    batch = models.ForeignKey(SettlementBatch, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    message = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kind}: {self.message[:60]}"


class ChainCursor(models.Model):
    """The last block the chain watcher has fully processed, per chain and contract."""

    name = models.CharField(max_length=120, unique=True)
    last_block = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_block}"


class ChainLog(models.Model):
    """An event log of the Settlement contract, identified by chain, transaction and log index."""

    chain_id = models.PositiveBigIntegerField()
    tx_hash = models.CharField(**_HASH)
    log_index = models.PositiveIntegerField()
    block_number = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class ChainDeposit(ChainLog):
    """A `Deposited` event; credited to the wallet's owner once, or left unmatched until the wallet is linked."""

    token = models.CharField(**_ADDRESS)
    currency = models.CharField(max_length=8, choices=Currency.choices, blank=True)
    from_address = models.CharField(**_ADDRESS)
    amount = BaseUnitsField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="chain_deposits"
    )
    ledger_transaction = models.OneToOneField(
        Transaction, null=True, blank=True, on_delete=models.PROTECT, related_name="chain_deposit"
    )
    credited_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "tx_hash", "log_index"], name="ledger_chain_deposit_unique")
        ]

    def __str__(self) -> str:
        return f"deposit {self.amount} {self.currency or self.token} from {self.from_address}"


class ChainClaim(ChainLog):
    """A claim payout (a token Transfer out of Settlement): `amount` paid, `cumulative` the account's total so far."""

    token = models.CharField(**_ADDRESS)
    currency = models.CharField(max_length=8, choices=Currency.choices, blank=True)
    account = models.CharField(**_ADDRESS)
    amount = BaseUnitsField()
    cumulative = BaseUnitsField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="chain_claims"
    )
    ledger_transaction = models.OneToOneField(
        Transaction, null=True, blank=True, on_delete=models.PROTECT, related_name="chain_claim"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "tx_hash", "log_index"], name="ledger_chain_claim_unique")
        ]

    def __str__(self) -> str:
        return f"claim {self.amount} {self.currency or self.token} by {self.account}"


class StakeEvent(ChainLog):
    """A `Staked`, `UnstakeRequested`, `StakeWithdrawn` or `StakeSlashed` event of JCT stake."""

    class Kind(models.TextChoices):
        STAKED = "staked", "Staked"
        UNSTAKE_REQUESTED = "unstake_requested", "Unstake requested"
        WITHDRAWN = "withdrawn", "Stake withdrawn"
        SLASHED = "slashed", "Stake slashed"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    account = models.CharField(**_ADDRESS)
    amount = BaseUnitsField()
    unlock_at = models.DateTimeField(null=True, blank=True)
    # A slash only: the part of `amount` taken from the pending unstake (the rest came from the active stake),
    # and the evidence hash it was made for.
    from_pending = BaseUnitsField(default=0)
    evidence = models.CharField(max_length=66, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chain_id", "tx_hash", "log_index"], name="ledger_stake_event_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} JCT by {self.account}"


# --- Payout wallets ---------------------------------------------------------------------------
# Linked by ledger.wallets; the tables kept the names they had when the marketplace app owned them.


class Wallet(models.Model):
    """An EVM address a user proved to control by signing a SIWE message; one user per address."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="wallets")
    address = models.CharField(max_length=42, unique=True, help_text="EIP-55 checksummed address.")
    chain_id = models.PositiveBigIntegerField()
    linked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "marketplace_wallet"

    def __str__(self) -> str:
        return self.address


class SiweNonce(models.Model):
    """A single-use, short-lived nonce the server issued for one Sign-In-With-Ethereum message."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="siwe_nonces")
    nonce = models.CharField(max_length=64, unique=True)
    address = models.CharField(max_length=42)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "marketplace_siwenonce"

    def __str__(self) -> str:
        return self.nonce


class Unstake(models.Model):
    """A request to unstake ledger-level JCT: it waits out the cool-down in the user's unstaking account.

    `slashed` is what a slash took from it during the cool-down; `released_at` is when the rest went back to the
    user's available balance (ledger.staking).
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="unstakes")
    amount = BaseUnitsField()
    slashed = BaseUnitsField(default=0)
    idempotency_key = models.CharField(max_length=200, unique=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    release_at = models.DateTimeField(db_index=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_unstake_amount_positive"),
            models.CheckConstraint(
                condition=Q(slashed__gte=0) & Q(slashed__lte=models.F("amount")), name="ledger_unstake_slashed_in_range"
            ),
        ]

    def __str__(self) -> str:
        return f"unstake {self.pk} of user {self.user_id}"
