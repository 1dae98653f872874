"""Services tests: the rentals fixtures (funded buyers, online nodes, rounds) and the gateway's test CA."""

from tests.nodes.gateway_fixtures import gateway_ca, gateway_settings  # noqa: F401
from tests.rentals.conftest import _reference_price, buyer, node, provider  # noqa: F401
