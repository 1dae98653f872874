"""Services tests: the rentals fixtures (funded buyers, online nodes, rounds)."""

from tests.rentals.conftest import _reference_price, buyer, node, provider  # noqa: F401
