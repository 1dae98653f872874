"""Callbacks nodes owns and a layer above fills in at start-up (nodes may not import it: docs/architecture.md)."""

from collections.abc import Callable

_default_reserve_price: Callable[[], int] | None = None


def default_reserve_price_provide(provider: Callable[[], int]) -> None:
    """Say how to price a node created without a reserve price (the pricing app does, in its ready())."""
    global _default_reserve_price
    _default_reserve_price = provider


def default_reserve_price() -> int:
    """Return the reserve price, USDC base units per vGPU-hour, of a node created without one."""
    if _default_reserve_price is None:
        raise RuntimeError("No app provided the default reserve price; is `pricing` in INSTALLED_APPS?")
    return _default_reserve_price()
