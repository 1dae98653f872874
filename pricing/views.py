"""Operator pages: the market account."""

from django.contrib.admin.views.decorators import staff_member_required
from django.shortcuts import render

from pricing.market_account import market_account_alert_text, market_account_summary


@staff_member_required
def market_account_page(request):
    """The market account for operators: balance over time, income, outflows and the alert."""
    summary = market_account_summary()
    return render(
        request,
        "pricing/market_account.html",
        {"account": summary, "alert": market_account_alert_text(summary), "days": list(reversed(summary.days))},
    )
