"""Template tag: the market account's low-balance alert, for the admin and operator pages."""

from django import template

from pricing.market_account import market_account_alert_text, market_account_summary

register = template.Library()


@register.simple_tag
def market_account_alert() -> str:
    """Return the market account alert line, or "" when its balance never fell below the threshold."""
    return market_account_alert_text(market_account_summary())
