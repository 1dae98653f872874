"""Currencies and conversion between decimal amounts and integer base units."""

from decimal import Context, Decimal, InvalidOperation, localcontext

from django.db import models

from ledger.errors import InvalidAmount, UnknownCurrency


class Currency(models.TextChoices):
    USDC = "USDC", "USD Coin"
    JCT = "JCT", "Janction Token"


DECIMALS: dict[str, int] = {Currency.USDC: 6, Currency.JCT: 18}

# Balances are numeric(78, 0) columns: anything below 10**60 base units fits with room for sums.
MAX_BASE_UNITS = 10**60

_EXACT = Context(prec=120)


def currency_decimals(currency: str) -> int:
    """Return the number of decimals of `currency`, or raise UnknownCurrency."""
    try:
        return DECIMALS[currency]
    except KeyError:
        known = ", ".join(DECIMALS)
        raise UnknownCurrency(f"Unknown currency {currency!r}; use one of: {known}.") from None


def to_base_units(amount: str | int | Decimal, currency: str, *, allow_zero: bool = False) -> int:
    """Convert a decimal amount in whole currency units to integer base units, exactly."""
    decimals = currency_decimals(currency)
    if isinstance(amount, bool) or isinstance(amount, float):
        raise InvalidAmount('Send amounts as decimal strings such as "12.50", not as JSON floats or booleans.')
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation:
        raise InvalidAmount(f'{amount!r} is not a decimal number; send a string such as "12.50".') from None
    if not value.is_finite():
        raise InvalidAmount("The amount must be a finite number.")
    with localcontext(_EXACT):
        scaled = value.scaleb(decimals)
        if scaled != scaled.to_integral_value():
            raise InvalidAmount(
                f"{currency} has {decimals} decimals; {amount} has more. Round it to {decimals} places."
            )
        base = int(scaled)
    if base >= MAX_BASE_UNITS:
        raise InvalidAmount("The amount is too large.")
    if base < 0 or (base == 0 and not allow_zero):
        raise InvalidAmount("The amount must be greater than zero.")
    return base


def from_base_units(base_units: int, currency: str) -> str:
    """Render integer base units as a plain decimal string in whole currency units."""
    decimals = currency_decimals(currency)
    with localcontext(_EXACT):
        text = format(Decimal(int(base_units)).scaleb(-decimals), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
