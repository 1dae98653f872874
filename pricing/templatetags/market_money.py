"""Template filter: USDC base units as an exact decimal string."""

from django import template

from ledger.currencies import from_base_units

register = template.Library()


@register.filter
def usdc(base_units: int) -> str:
    """Render signed USDC base units exactly, e.g. -1500000 -> "-1.5"."""
    sign = "-" if base_units < 0 else ""
    return sign + from_base_units(abs(base_units), "USDC")
