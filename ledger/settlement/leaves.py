"""Claim leaves of Settlement version 3: packed words, two claim bits per allocation index (docs/settlement.md).

A leaf of root r is nine fields packed into three uint256 words, hashed as OpenZeppelin's StandardMerkleTree
hashes ``(uint256, uint256, uint256)`` and passed to ``claim(key, tokenAmount, accountPrevious, proof)``:

- ``key`` = index (bits 0-63) | the index's two claim bits at the batch's state block (bits 64-65) | the
  leaf's parity p (bit 66) | paid_before (bits 160-255);
- ``tokenAmount`` = token (bits 0-159) | cumulative (bits 160-255);
- ``accountPrevious`` = account (bits 0-159) | previous (bits 160-255): this index's cumulative amount in the
  root that was active when the batch was built (0 if it had none).

A claim against the leaf reverts if bit p changed since the build (already claimed against this root); it
pays ``cumulative - previous`` if the other bit changed (a claim against the previous root came after the
build) and ``cumulative - paid_before`` otherwise, and toggles bit p. This module is pure Python (no Django):
the batch builder, the verify command and the gas benchmark share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LEAF_TYPES = ("uint256", "uint256", "uint256")
INDEX_LIMIT = 2**64
# Amounts are uint96: 7.9e28 base units, 79 billion JCT at 18 decimals or 7.9e22 USDC at 6.
AMOUNT_LIMIT = 2**96
INDICES_PER_WORD = 128
_ADDRESS_MASK = 2**160 - 1


class LeafRangeError(ValueError):
    """A leaf field that does not fit its packed width."""


@dataclass(frozen=True, slots=True)
class ClaimLeaf:
    """One leaf's fields: what it pays and the claim state it was built from."""

    index: int
    token: str
    account: str
    cumulative: int
    previous: int
    paid_before: int
    parity: int
    bits: int

    def words(self) -> tuple[int, int, int]:
        """Return the three packed words (the leaf's values and the claim's first three arguments)."""
        for name, value, limit in (
            ("index", self.index, INDEX_LIMIT),
            ("cumulative", self.cumulative, AMOUNT_LIMIT),
            ("previous", self.previous, AMOUNT_LIMIT),
            ("paid_before", self.paid_before, AMOUNT_LIMIT),
        ):
            if not 0 <= value < limit:
                raise LeafRangeError(f"leaf {self.index}: {name} {value} does not fit {limit.bit_length() - 1} bits")
        if self.parity not in (0, 1) or not 0 <= self.bits <= 3:
            raise LeafRangeError(f"leaf {self.index}: parity {self.parity} / bits {self.bits} out of range")
        key = self.index | self.bits << 64 | self.parity << 66 | self.paid_before << 160
        return key, int(self.token, 16) | self.cumulative << 160, int(self.account, 16) | self.previous << 160

    def values(self) -> list[str]:
        """Return the words as decimal strings (the DA copy's and StandardMerkleTree's form)."""
        return [str(word) for word in self.words()]

    def paid(self, bits_now: int) -> int:
        """Return what the index has been paid as a claim with this leaf sees it under claim bits ``bits_now``.

        Exact while this leaf's root is the claimable one, and afterwards as long as the root before it can no
        longer be claimed (its bit, the other one, is final then): the contract's ``paidOf``.
        """
        changed = (bits_now ^ self.bits) & 3
        if changed >> self.parity & 1:
            return self.cumulative
        if changed >> (self.parity ^ 1) & 1:
            return self.previous
        return self.paid_before


def unpack(words: Iterable[int | str]) -> ClaimLeaf:
    """Return the fields of a leaf from its three packed words (ints or decimal strings)."""
    key, token_amount, account_previous = (int(word) for word in words)
    return ClaimLeaf(
        index=key & (INDEX_LIMIT - 1),
        token=_address(token_amount),
        account=_address(account_previous),
        cumulative=token_amount >> 160,
        previous=account_previous >> 160,
        paid_before=key >> 160,
        parity=key >> 66 & 1,
        bits=key >> 64 & 3,
    )


def _address(word: int) -> str:
    return "0x" + (word & _ADDRESS_MASK).to_bytes(20, "big").hex()


def word_slots(indices: Iterable[int]) -> list[int]:
    """Return the claim-bit words (slots) that hold ``indices``, sorted, each once."""
    return sorted({index // INDICES_PER_WORD for index in indices})


def bits_of(words: Mapping[int, int], index: int) -> int:
    """Return the two claim bits of ``index`` from ``words`` (slot -> word; a missing slot is zero)."""
    return words.get(index // INDICES_PER_WORD, 0) >> (2 * (index % INDICES_PER_WORD)) & 3


def next_leaf(
    *,
    index: int,
    token: str,
    account: str,
    cumulative: int,
    parity: int,
    bits_now: int,
    previous_leaf: ClaimLeaf | None,
    carried: int = 0,
) -> ClaimLeaf:
    """Return the leaf of ``index`` in a new root of ``parity``, built from claim bits ``bits_now``.

    ``bits_now`` must be read at a confirmed block after the previous root (``previous_leaf``'s) became
    claimable; ``carried`` is what a previous deployment paid (the first root of a new contract only).
    """
    if previous_leaf is None:
        previous, paid_before = 0, carried
    else:
        if previous_leaf.parity == parity:
            raise LeafRangeError(f"leaf {index}: a new root must have the other parity than the previous one")
        previous, paid_before = previous_leaf.cumulative, previous_leaf.paid(bits_now)
    if cumulative < previous or cumulative < paid_before:
        raise LeafRangeError(
            f"leaf {index}: cumulative {cumulative} is below what the previous root owed ({previous}) or paid "
            f"({paid_before})"
        )
    return ClaimLeaf(index, token, account, cumulative, previous, paid_before, parity, bits_now)


# How the DA copy's readers unpack a leaf (its `leaf_format`).
LEAF_FORMAT = [
    "key = index (bits 0-63) | claim bits at state_block (64-65) | parity (66) | paid_before (160-255)",
    "tokenAmount = token (bits 0-159) | cumulative (160-255)",
    "accountPrevious = account (bits 0-159) | previous root's cumulative (160-255)",
]


def parse_words(leaves: Iterable[Iterable[int | str]]) -> dict[int, tuple[int, int, int]]:
    """Return ``index -> (key, tokenAmount, accountPrevious)`` of packed leaves (a DA copy's, as decimal strings)."""
    parsed = {}
    for key, token_amount, account_previous in leaves:
        key = int(key)
        parsed[key & (INDEX_LIMIT - 1)] = (key, int(token_amount), int(account_previous))
    return parsed


def pack_batch(
    amounts: Iterable[tuple[int, str, str, int | str]],
    *,
    parity: int,
    words: Mapping[int, int],
    previous: Mapping[int, tuple[int, int, int]],
    carried: Mapping[int, int],
) -> list[list[str]]:
    """Return the packed leaves of ``pack_batch_words`` as decimal strings (as a DA copy publishes them)."""
    packed = pack_batch_words(amounts, parity=parity, words=words, previous=previous, carried=carried)
    return [[str(key), str(token_amount), str(account_previous)] for key, token_amount, account_previous in packed]


def pack_batch_words(
    amounts: Iterable[tuple[int, str, str, int | str]],
    *,
    parity: int,
    words: Mapping[int, int],
    previous: Mapping[int, tuple[int, int, int]],
    carried: Mapping[int, int],
) -> list[tuple[int, int, int]]:
    """Return the packed leaves (three ints each) of ``(index, token, account, cumulative)`` rows: ``next_leaf`` for
    a whole batch at once, on plain ints (a batch of 100,000 leaves in a fraction of the dataclass path's time).

    ``words`` are the claim-bit words at the state block, ``previous`` the standing root's packed leaves by index
    (``parse_words``), ``carried`` what a previous deployment paid (a contract's first root only).
    """
    if parity not in (0, 1):
        raise LeafRangeError(f"parity {parity} out of range")
    tokens: dict[str, int] = {}
    parity_bit = parity << 66
    out = []
    append = out.append
    for index, token, account, cumulative in amounts:
        cumulative = int(cumulative)
        token_word = tokens.get(token)
        if token_word is None:
            token_word = tokens[token] = int(token, 16)
        bits = words.get(index >> 7, 0) >> ((index & 127) << 1) & 3
        earlier = previous.get(index)
        if earlier is None:
            before, paid_before = 0, carried.get(index, 0)
        else:
            key, token_amount, account_previous = earlier
            if key >> 66 & 1 == parity:
                raise LeafRangeError(f"leaf {index}: a new root must have the other parity than the previous one")
            before = token_amount >> 160
            changed = bits ^ (key >> 64 & 3)
            if changed >> (parity ^ 1) & 1:  # the previous root's own bit: claimed against it
                paid_before = before
            elif changed >> parity & 1:  # this root's bit: claimed against the root before the previous one
                paid_before = account_previous >> 160
            else:
                paid_before = key >> 160
        if (
            not 0 <= index < INDEX_LIMIT
            or not 0 <= cumulative < AMOUNT_LIMIT
            or not 0 <= paid_before < AMOUNT_LIMIT
            or cumulative < before
            or cumulative < paid_before
        ):
            # The slow path names the field that does not fit.
            next_leaf(
                index=index,
                token=token,
                account=account,
                cumulative=cumulative,
                parity=parity,
                bits_now=bits,
                previous_leaf=None if earlier is None else unpack(earlier),
                carried=carried.get(index, 0),
            ).words()
            raise LeafRangeError(f"leaf {index}: out of range")  # pragma: no cover - next_leaf raised above
        append(
            (
                index | bits << 64 | parity_bit | paid_before << 160,
                token_word | cumulative << 160,
                int(account, 16) | before << 160,
            )
        )
    return out
