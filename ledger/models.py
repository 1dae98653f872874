"""Double-entry ledger: accounts, transactions and their entries, in integer base units."""

from django.conf import settings
from django.db import models
from django.db.models import Q

from ledger.currencies import Currency

# numeric(78, 0): holds any uint256, so JCT's 18 decimals never overflow a column.
BASE_UNITS = {"max_digits": 78, "decimal_places": 0}


class AccountKind(models.TextChoices):
    AVAILABLE = "available", "Available"
    ESCROW = "escrow", "Escrow"
    EARNINGS = "earnings", "Earnings"
    FEES = "fees", "Platform fees"
    MARKET = "market", "Platform market"
    REWARDS_POOL = "rewards_pool", "Rewards pool"
    CHAIN_CLEARING = "chain_clearing", "Chain clearing"


USER_KINDS = (AccountKind.AVAILABLE, AccountKind.ESCROW, AccountKind.EARNINGS)
PLATFORM_KINDS = (AccountKind.FEES, AccountKind.MARKET, AccountKind.REWARDS_POOL, AccountKind.CHAIN_CLEARING)


class Account(models.Model):
    """A balance in one currency: a user's (available, escrow, earnings) or the platform's."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_accounts"
    )
    kind = models.CharField(max_length=20, choices=AccountKind.choices)
    currency = models.CharField(max_length=8, choices=Currency.choices)
    balance = models.DecimalField(default=0, **BASE_UNITS)
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
    amount = models.DecimalField(**BASE_UNITS)
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
