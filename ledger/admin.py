from django.contrib import admin

from ledger.models import Account, Entry, IdempotencyRecord, Transaction


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
