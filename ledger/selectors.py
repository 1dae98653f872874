"""Ledger reads."""

from django.db.models import QuerySet

from ledger.models import Account, Entry
from ledger.services import ledger_accounts_ensure


def balances_for_user(*, user_id: int) -> list[Account]:
    """Return every account of a user (creating missing ones), ordered by currency and kind."""
    ledger_accounts_ensure(user_id=user_id)
    return list(Account.objects.filter(owner_id=user_id).order_by("currency", "kind"))


def entries_for_user(*, user_id: int) -> QuerySet[Entry]:
    """Return the entries on a user's accounts, newest first."""
    return (
        Entry.objects.filter(account__owner_id=user_id)
        .select_related("account", "transaction")
        .order_by("-created_at", "-pk")
    )
