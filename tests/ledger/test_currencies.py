import pytest

from ledger.currencies import from_base_units, to_base_units
from ledger.errors import InvalidAmount, UnknownCurrency


@pytest.mark.parametrize(
    ("amount", "currency", "base"),
    [
        ("1", "USDC", 1_000_000),
        ("0.000001", "USDC", 1),
        ("12.50", "USDC", 12_500_000),
        (3, "USDC", 3_000_000),
        ("007.10", "USDC", 7_100_000),
        ("1.5000000000", "USDC", 1_500_000),
        ("1.000000000000000001", "JCT", 10**18 + 1),
        ("123456789012.123456789012345678", "JCT", 123456789012123456789012345678),
    ],
)
def test_to_base_units_is_exact(amount, currency, base):
    assert to_base_units(amount, currency) == base


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0.0000001", "6 decimals"),
        ("-1", "not an amount"),
        ("0", "greater than zero"),
        ("abc", "not an amount"),
        ("NaN", "not an amount"),
        ("Infinity", "not an amount"),
        (1.5, "decimal string"),
        (True, "decimal string"),
        ("1e70", "not an amount"),
        ("1" + "0" * 60, "too large"),
        ("9" * 101, "not an amount"),
        # Only plain ASCII decimals: no other digits, signs, separators, spaces or exponents.
        ("\u0661", "not an amount"),
        ("\uff11", "not an amount"),
        ("1_0", "not an amount"),
        ("+1", "not an amount"),
        (" 1 ", "not an amount"),
        ("1\n", "not an amount"),
        ("1E2", "not an amount"),
        ("1e999999", "not an amount"),
        (".5", "not an amount"),
        ("5.", "not an amount"),
        ("1,5", "not an amount"),
    ],
)
def test_to_base_units_rejects_bad_amounts(amount, message):
    with pytest.raises(InvalidAmount, match=message):
        to_base_units(amount, "USDC")


def test_unknown_currency_names_the_known_ones():
    with pytest.raises(UnknownCurrency, match="USDC, JCT"):
        to_base_units("1", "DOGE")


@pytest.mark.parametrize(
    ("base", "currency", "text"),
    [(1_500_000, "USDC", "1.5"), (0, "USDC", "0"), (-25, "USDC", "-0.000025"), (10**18, "JCT", "1")],
)
def test_from_base_units(base, currency, text):
    assert from_base_units(base, currency) == text


def test_amount_field_refuses_json_numbers_and_reads_strings():
    from ledger.currencies import AmountField

    field = AmountField(currency="USDC")
    assert field.run_validation("2.5") == 2_500_000
    for number in (1, 1.0, True, None, ["1"], {"a": "1"}):
        with pytest.raises(Exception, match="decimal string"):
            field.run_validation(number) if number is not None else field.to_internal_value(number)
