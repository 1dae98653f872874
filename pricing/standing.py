"""A hook an upper layer (reputation) fills so rounds can admit and rank nodes by score without importing it.

`standing_source_set(fn)` registers `fn(pool_name, node_ids) -> Standing`. Without a source every node is
admitted and none is preferred.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Standing:
    """Nodes' scores in [0, 1] and the least score a node needs to enter the pool's rounds."""

    scores: dict[int, Decimal] = field(default_factory=dict)
    minimum: Decimal = Decimal(0)
    rank: bool = False  # break placement ties by score
    excluded: frozenset[int] = frozenset()  # nodes kept out whatever their score (e.g. their provider's stake is short)

    def admits(self, node_id: int) -> bool:
        return node_id not in self.excluded and self.scores.get(node_id, Decimal(1)) >= self.minimum


_source: Callable[[str, list[int]], Standing] | None = None


def standing_source_set(source: Callable[[str, list[int]], Standing] | None) -> None:
    global _source
    _source = source


def node_standing(*, pool_name: str, node_ids: list[int]) -> Standing:
    """Return the nodes' standing in `pool_name` from the registered source (everyone admitted without one)."""
    if _source is None or not node_ids:
        return Standing()
    return _source(pool_name, node_ids)
