"""Colocation tests share the rentals fixtures (funded buyers, providers, the reference price)."""

from tests.rentals.conftest import _reference_price, buyer, provider  # noqa: F401
from tests.rentals.test_agent_e2e import test_image  # noqa: F401
