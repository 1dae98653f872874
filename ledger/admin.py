from django.contrib import admin

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
    list_display = ["id", "owner", "kind", "currency", "balance"]
    list_filter = ["kind", "currency"]
    search_fields = ["owner__email"]


class EntryInline(admin.TabularInline):
    model = Entry
    extra = 0
    can_delete = False
    readonly_fields = ["account", "currency", "amount", "created_at"]


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "memo", "idempotency_key", "created_at"]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "memo"]
    inlines = [EntryInline]


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "transaction", "account", "currency", "amount", "created_at"]
    list_filter = ["currency", "account__kind"]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "method", "path", "key", "state", "response_status", "created_at"]
    list_filter = ["state"]


@admin.register(SettlementBatch)
class SettlementBatchAdmin(ReadOnlyAdmin):
    list_display = ["seq", "status", "root", "tx_hash", "block_number", "leaf_count", "attempts", "posted_at"]
    list_filter = ["status"]
    search_fields = ["root", "tx_hash", "data__sha256"]


@admin.register(BatchData)
class BatchDataAdmin(ReadOnlyAdmin):
    list_display = ["sha256", "created_at"]
    search_fields = ["sha256"]


@admin.register(SettlementAlert)
class SettlementAlertAdmin(admin.ModelAdmin):
    """Operators read alerts and mark them resolved once handled."""

    list_display = ["id", "kind", "batch", "message", "created_at", "resolved_at"]
    list_filter = ["kind", ("resolved_at", admin.EmptyFieldListFilter)]
    readonly_fields = ["kind", "batch", "message", "detail", "created_at"]

    def has_add_permission(self, request):
        return False


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
