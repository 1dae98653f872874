"""Admin: stored market rounds and bids (read-only) with the market account alert on top."""

from django.contrib import admin, messages

from ledger.currencies import from_base_units
from pricing.market_account import market_account_alert_text, market_account_summary
from pricing.models import Bid, MarketRound


@admin.register(MarketRound)
class MarketRoundAdmin(admin.ModelAdmin):
    list_display = ["id", "pool", "created_at", "mechanism", "units_traded", "budget_per_hour"]
    list_filter = ["mechanism", "pool"]
    readonly_fields = [f.name for f in MarketRound._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        alert = market_account_alert_text(market_account_summary())
        if alert:
            messages.warning(request, alert)
        return super().changelist_view(request, extra_context)


@admin.register(Bid)
class BidAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "pool", "units", "max_price", "state", "round", "payment", "deadline", "created_at"]
    list_filter = ["state", "pool"]
    search_fields = ["=id", "reference", "owner__email"]
    readonly_fields = [f.name for f in Bid._meta.fields]

    @admin.display(description="Max price (USDC/vGPU-h)", ordering="max_price_per_hour")
    def max_price(self, bid):
        return from_base_units(bid.max_price_per_hour, "USDC")

    @admin.display(description="Payment (USDC/h)", ordering="payment_per_hour")
    def payment(self, bid):
        return "-" if bid.payment_per_hour is None else from_base_units(bid.payment_per_hour, "USDC")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
