"""A hook an upper layer (rentals) fills: earnings of which rentals stay out of settlement batches for now.

Settlement leaves are cumulative and never decrease, so money that may still be refunded (a rental inside its
dispute window, or with an open dispute) must not be published yet. `earnings_hold_source_set(fn)` registers
`fn() -> set[int]` of held rental ids; earnings entries whose transaction metadata names a held rental, and the
dispute refunds of those rentals, are left out of the batch until the hold lifts. Without a source nothing is held.
"""

from collections.abc import Callable

_source: Callable[[], set[int]] | None = None


def earnings_hold_source_set(source: Callable[[], set[int]] | None) -> None:
    global _source
    _source = source


def held_rental_ids() -> set[int]:
    return set(_source()) if _source is not None else set()
