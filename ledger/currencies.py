"""Currencies and the one rule for amounts: plain ASCII decimal strings in whole units, exact base units inside.

Every amount the API reads (faucet, reserve prices, rental price caps, price estimates) goes through
`to_base_units`, or through `AmountField` for serializers: a string of ASCII digits with an optional
fraction (`"12"`, `"0.45"`). Bare JSON numbers are refused, because a float cannot say `0.1` exactly and
an integer would be ambiguous between whole units and base units; so are signs, exponents, spaces,
underscores and non-ASCII digits.
"""

import re

from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ledger.errors import InvalidAmount, UnknownCurrency


class Currency(models.TextChoices):
    USDC = "USDC", "USD Coin"
    JCT = "JCT", "Janction Token"


DECIMALS: dict[str, int] = {Currency.USDC: 6, Currency.JCT: 18}
# Base units in one USDC (10**6): the one place the USDC scale is written down.
USDC_SCALE = 10 ** DECIMALS[Currency.USDC]

# Balances are numeric(78, 0) columns: anything below 10**60 base units fits with room for sums.
MAX_BASE_UNITS = 10**60
# The longest amount string read; longer ones are refused before any arithmetic.
MAX_AMOUNT_CHARS = 100
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
AMOUNT_RULE = (
    'a decimal string in whole currency units, ASCII digits with an optional fraction, e.g. "12" or "0.45" '
    "(no sign, exponent, spaces, underscores or JSON numbers)"
)


def currency_decimals(currency: str) -> int:
    """Return the number of decimals of `currency`, or raise UnknownCurrency."""
    try:
        return DECIMALS[currency]
    except KeyError:
        known = ", ".join(DECIMALS)
        raise UnknownCurrency(f"Unknown currency {currency!r}; use one of: {known}.") from None


def to_base_units(amount: str | int, currency: str, *, allow_zero: bool = False) -> int:
    """Convert an amount in whole currency units to integer base units, exactly.

    `amount` is a plain ASCII decimal string (what clients send) or a Python int of whole units (settings).
    """
    decimals = currency_decimals(currency)
    if isinstance(amount, int) and not isinstance(amount, bool):
        base = amount * 10**decimals
    elif isinstance(amount, str):
        match = _AMOUNT.fullmatch(amount) if len(amount) <= MAX_AMOUNT_CHARS else None
        if match is None:
            shown = amount if len(amount) <= 40 else amount[:40] + "..."
            raise InvalidAmount(f"{shown!r} is not an amount; send {AMOUNT_RULE}.")
        whole, fraction = match.group(1), (match.group(2) or "").rstrip("0")
        if len(fraction) > decimals:
            raise InvalidAmount(
                f"{currency} has {decimals} decimals; {amount} has more. Round it to {decimals} places."
            )
        if len(whole.lstrip("0")) > 60:
            raise InvalidAmount("The amount is too large.")
        base = int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    else:
        raise InvalidAmount(f"Send the amount as {AMOUNT_RULE}.")
    if base >= MAX_BASE_UNITS:
        raise InvalidAmount("The amount is too large.")
    if base < 0 or (base == 0 and not allow_zero):
        raise InvalidAmount("The amount must be greater than zero.")
    return base


def from_base_units(base_units: int, currency: str) -> str:
    """Render integer base units as a plain decimal string in whole currency units."""
    decimals = currency_decimals(currency)
    base_units = int(base_units)
    sign = "-" if base_units < 0 else ""
    whole, fraction = divmod(abs(base_units), 10**decimals)
    text = f"{whole}.{fraction:0{decimals}d}".rstrip("0").rstrip(".") if decimals else str(whole)
    return sign + text


def usdc(base_units: int) -> str:
    """Render USDC base units as a plain decimal string in whole USDC (a sign when negative)."""
    return from_base_units(base_units, Currency.USDC)


class AmountNotText(InvalidAmount):
    """The amount was not a string (nor, where allowed, an int of base units)."""


class AmountAboveCeiling(InvalidAmount):
    """The amount is more than the endpoint's ceiling."""


def read_amount(
    value, currency: str, *, allow_zero: bool = False, ceiling: int | None = None, int_is_base_units: bool = False
) -> int:
    """Read an amount a client sent into integer base units: every endpoint that reads amounts comes here.

    The endpoints do not agree yet, and each keeps its behaviour through the flags: the rentals API takes a
    bare int as base units (`int_is_base_units`), every other endpoint refuses anything but a string. Each
    maps the exceptions (AmountNotText, AmountAboveCeiling, InvalidAmount) to its own message.
    """
    if int_is_base_units and isinstance(value, int) and not isinstance(value, bool):
        base = value
    elif isinstance(value, str):
        base = to_base_units(value, currency, allow_zero=allow_zero)
    else:
        raise AmountNotText(f"Send the amount as {AMOUNT_RULE}.")
    if ceiling is not None and base > ceiling:
        raise AmountAboveCeiling(f"The amount may be at most {from_base_units(ceiling, currency)} {currency}.")
    return base


@extend_schema_field({"type": "string", "pattern": AMOUNT_PATTERN, "maxLength": MAX_AMOUNT_CHARS, "example": "12.5"})
class AmountField(serializers.Field):
    """An amount in whole units of `currency`, read by the one rule above into integer base units."""

    def __init__(self, *, currency: str | None = None, allow_zero: bool = False, **kwargs):
        self.currency = currency  # None: read the `currency` field of the same request
        self.allow_zero = allow_zero
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        currency = self.currency or self._sibling_currency()
        try:
            return read_amount(data, currency, allow_zero=self.allow_zero)
        except (InvalidAmount, UnknownCurrency) as exc:
            raise serializers.ValidationError(exc.message) from None

    def to_representation(self, value):
        return from_base_units(value, self.currency or "USDC")

    def _sibling_currency(self) -> str:
        currency = self.parent.initial_data.get("currency") if isinstance(self.parent.initial_data, dict) else None
        if currency not in DECIMALS:
            raise serializers.ValidationError("Name a valid currency to read the amount in.")
        return currency
