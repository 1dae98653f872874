"""Admin: stored market rounds (read-only) with the market account alert on top."""

from django.contrib import admin, messages

from pricing.market_account import market_account_alert_text, market_account_summary
from pricing.models import MarketRound


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
