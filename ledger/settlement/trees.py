"""Batch trees built once per process: the proof endpoint serves every proof from the same tree object.

A batch's tree is built either where the batch is prepared (``tree_remember``) or, in another process, once
from its stored DA copy on the first request; the last few batches stay cached (batches are immutable, so a
cached tree never goes stale).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ledger.merkle import StandardMerkleTree, checksum_address
from ledger.models import BatchData
from ledger.settlement import leaves as claim_leaves

# Batches whose trees a process keeps: the latest posted one, the one being prepared, and a couple more.
CACHED_BATCHES = 4
_DEFAULT_LEAF_TYPES = ("uint256", "address", "address", "uint128")


@dataclass(frozen=True)
class BatchTree:
    """A batch's DA content, its tree, and where each (token, account) leaf sits in it."""

    content: dict[str, Any]
    tree: StandardMerkleTree
    position: dict[tuple[str, str], int]


_cache: OrderedDict[str, BatchTree] = OrderedDict()
_lock = threading.Lock()


def tree_remember(
    *,
    sha256: str,
    content: dict[str, Any],
    tree: StandardMerkleTree,
    position: dict[tuple[str, str], int] | None = None,
) -> BatchTree:
    """Keep the tree just built for the DA copy ``sha256`` so requests in this process never rebuild it.

    ``position`` is what ``_positions(content)`` returns, when the caller already has it (the batch it just packed
    from checksummed addresses, in leaf order); otherwise it is read back from the leaves.
    """
    entry = BatchTree(content=content, tree=tree, position=_positions(content) if position is None else position)
    with _lock:
        _cache[sha256] = entry
        _cache.move_to_end(sha256)
        while len(_cache) > CACHED_BATCHES:
            _cache.popitem(last=False)
    return entry


def _positions(content: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Map each leaf's (token, account), both checksummed, to its position in the DA copy's leaves."""
    if content.get("version", 0) >= 4:  # packed leaves (ledger/settlement/leaves.py)
        tokens: dict[int, str] = {}
        position = {}
        for number, leaf in enumerate(content["leaves"]):
            token_word, account_word = int(leaf[1]) & _ADDRESS_MASK, int(leaf[2]) & _ADDRESS_MASK
            token = tokens.get(token_word)
            if token is None:
                token = tokens[token_word] = checksum_address("0x" + token_word.to_bytes(20, "big").hex())
            position[(token, checksum_address("0x" + account_word.to_bytes(20, "big").hex()))] = number
        return position
    # (index, token, account, amount); DA copies before version 3 had no index.
    return {(leaf[-3], leaf[-2]): position for position, leaf in enumerate(content["leaves"])}


_ADDRESS_MASK = 2**160 - 1


def leaf_fields(content: dict[str, Any], position: int) -> claim_leaves.ClaimLeaf | None:
    """Return the fields of the leaf at ``position`` of a version-4 DA copy (None for older copies)."""
    if content.get("version", 0) < 4:
        return None
    return claim_leaves.unpack(content["leaves"][position])


def tree_get(*, sha256: str) -> BatchTree:
    """Return the tree of the DA copy ``sha256``, building it from the stored copy on this process's first use."""
    with _lock:
        entry = _cache.get(sha256)
        if entry is not None:
            _cache.move_to_end(sha256)
            return entry
    content = json.loads(BatchData.objects.get(sha256=sha256).content)
    # Our own stored copy, whose addresses we checksummed when we wrote it: the checksum check adds nothing.
    tree = StandardMerkleTree.of(content["leaves"], content.get("leaf_types", _DEFAULT_LEAF_TYPES), checksums=False)
    return tree_remember(sha256=sha256, content=content, tree=tree)


def tree_forget_all() -> None:
    """Empty this process's cache (tests)."""
    with _lock:
        _cache.clear()
