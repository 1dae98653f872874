from django.contrib import admin, messages
from django.utils import timezone

from janction.errors import ApplicationError
from ledger.currencies import from_base_units
from ledger.models import (
    Account,
    BatchData,
    ChainClaim,
    ChainCursor,
    ChainDeposit,
    Entry,
    IdempotencyRecord,
    PayoutAllocation,
    SettlementAlert,
    SettlementBatch,
    SiweNonce,
    StakeEvent,
    Transaction,
    Wallet,
)
from ledger.settlement.batches import settlement_batch_post


class ReadOnlyAdmin(admin.ModelAdmin):
    """The ledger is append-only: operators inspect it, they never edit it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "owner", "kind", "currency", "balance_units"]
    list_filter = ["kind", "currency"]

    @admin.display(description="Balance", ordering="balance")
    def balance_units(self, account):
        return from_base_units(int(account.balance), account.currency)

    search_fields = ["owner__email"]


class EntryInline(admin.TabularInline):
    model = Entry
    extra = 0
    can_delete = False
    fields = readonly_fields = ["account", "currency", "amount_units", "created_at"]

    @admin.display(description="Amount")
    def amount_units(self, entry):
        return from_base_units(int(entry.amount), entry.currency)


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "memo", "idempotency_key", "created_at"]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "memo"]
    inlines = [EntryInline]


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "transaction", "account", "currency", "amount_units", "created_at"]
    list_filter = ["currency", "account__kind"]

    @admin.display(description="Amount", ordering="amount")
    def amount_units(self, entry):
        return from_base_units(int(entry.amount), entry.currency)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "method", "path", "key", "state", "response_status", "created_at"]
    list_filter = ["state"]


RETRYABLE = (SettlementBatch.Status.PREPARED, SettlementBatch.Status.SENT)


@admin.register(SettlementBatch)
class SettlementBatchAdmin(ReadOnlyAdmin):
    list_display = ["seq", "status", "root", "tx_hash", "block_number", "leaf_count", "attempts", "posted_at"]
    list_filter = ["status"]
    search_fields = ["root", "tx_hash", "data__sha256"]
    readonly_fields = ["last_error"]
    actions = ["retry_post"]

    @admin.action(description="Retry posting the selected failed or stuck batches (in order)")
    def retry_post(self, request, queryset):
        """Post each selected unposted batch now, in sequence order, through the settlement service.

        The service posts exactly once (a batch the chain already holds is adopted, a stuck transaction is
        replaced with the same nonce). A rejected batch is never re-posted: resolve its alert instead.
        """
        for batch in queryset.order_by("seq"):
            if batch.status not in RETRYABLE:
                self.message_user(
                    request,
                    f"Batch {batch.seq} is {batch.status}; only prepared or sent batches are posted.",
                    messages.WARNING,
                )
                continue
            try:
                batch = settlement_batch_post(batch_id=batch.pk)
            except ApplicationError as exc:
                self.log_change(request, batch, f"Retried posting (admin action): failed, {exc.code}")
                self.message_user(request, f"Batch {batch.seq}: {exc.message}", messages.ERROR)
                break  # later batches cannot be posted before this one
            self.log_change(request, batch, f"Retried posting (admin action): {batch.status}, {batch.tx_hash}")
            self.message_user(request, f"Batch {batch.seq} is {batch.status} ({batch.tx_hash}).", messages.SUCCESS)


@admin.register(BatchData)
class BatchDataAdmin(ReadOnlyAdmin):
    list_display = ["sha256", "created_at"]
    search_fields = ["sha256"]


@admin.register(SettlementAlert)
class SettlementAlertAdmin(admin.ModelAdmin):
    """Operators read alerts and mark them resolved once handled."""

    list_display = ["id", "kind", "batch", "message", "created_at", "resolved_at"]
    list_filter = ["kind", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["message", "batch__seq"]
    readonly_fields = ["kind", "batch", "message", "detail", "created_at", "resolved_at"]
    actions = ["resolve"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Mark the selected alerts resolved (a batch_rejected alert lifts the posting hold)")
    def resolve(self, request, queryset):
        """Resolve open alerts once handled; each resolution is recorded."""
        resolved = 0
        for alert in queryset.filter(resolved_at__isnull=True).order_by("pk"):
            if SettlementAlert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(resolved_at=timezone.now()):
                self.log_change(request, alert, f"Resolved {alert.kind} (admin action)")
                resolved += 1
        self.message_user(request, f"Resolved: {resolved} alert(s).", messages.SUCCESS)


@admin.register(PayoutAllocation)
class PayoutAllocationAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "currency", "address", "cumulative", "updated_at"]
    list_filter = ["currency"]
    search_fields = ["address", "user__email"]


@admin.register(ChainCursor)
class ChainCursorAdmin(ReadOnlyAdmin):
    list_display = ["name", "last_block", "updated_at"]


@admin.register(ChainDeposit)
class ChainDepositAdmin(ReadOnlyAdmin):
    list_display = ["id", "from_address", "currency", "amount", "user", "credited_at", "tx_hash", "block_number"]
    list_filter = ["currency", ("credited_at", admin.EmptyFieldListFilter)]
    search_fields = ["from_address", "tx_hash"]


@admin.register(ChainClaim)
class ChainClaimAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "currency", "amount", "cumulative", "user", "tx_hash", "block_number"]
    list_filter = ["currency"]
    search_fields = ["account", "tx_hash"]


@admin.register(StakeEvent)
class StakeEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "account", "kind", "amount", "unlock_at", "tx_hash", "block_number"]
    list_filter = ["kind"]
    search_fields = ["account", "tx_hash"]


@admin.register(Wallet)
class WalletAdmin(admin.ModelAdmin):
    list_display = ["address", "user", "chain_id", "linked_at"]
    search_fields = ["address", "user__email"]


@admin.register(SiweNonce)
class SiweNonceAdmin(admin.ModelAdmin):
    list_display = ["nonce", "user", "address", "created_at", "expires_at", "used_at"]
    readonly_fields = ["nonce", "user", "address", "message", "expires_at", "used_at"]
