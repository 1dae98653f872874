"""Near-duplicate detection: MinHash signatures over character shingles, banded for look-up (LSH).

Two texts are near-duplicates when the estimated Jaccard similarity of their shingle sets is at least
NEAR_DUPLICATE_JACCARD. The signature has PERMUTATIONS values; BANDS bands of ROWS values each are stored
as band hashes, so candidates are found by equal band hashes (a pair at Jaccard 0.8 shares a band with
probability 1 - (1 - 0.8^4)^16 > 0.999) and then confirmed on the whole signature. Pure: no Django import.
"""

from __future__ import annotations

import hashlib
import random
import re

import numpy as np

SHINGLE_CHARS = 5
PERMUTATIONS = 64
BANDS = 16
ROWS = PERMUTATIONS // BANDS
NEAR_DUPLICATE_JACCARD = 0.8
# Permutations h(x) = (a x + b) mod p of 32-bit shingle hashes, with a, b < 2^31: a x + b < 2^63 never overflows
# unsigned 64-bit arithmetic, so numpy computes all of them at once.
_PRIME = (1 << 61) - 1
_rng = random.Random(20261201)  # fixed: signatures must be comparable across processes and releases
_A = np.array([_rng.randrange(1, 1 << 31) for _ in range(PERMUTATIONS)], dtype=np.uint64)
_B = np.array([_rng.randrange(0, 1 << 31) for _ in range(PERMUTATIONS)], dtype=np.uint64)


def normalise(text: str) -> str:
    """Lower-case and collapse whitespace, so spacing and case do not hide a duplicate."""
    return re.sub(r"\s+", " ", text.casefold()).strip()


def shingles(text: str) -> set[str]:
    """Return the set of SHINGLE_CHARS-character shingles of the normalised text (the text itself if shorter)."""
    text = normalise(text)
    if len(text) <= SHINGLE_CHARS:
        return {text}
    return {text[i : i + SHINGLE_CHARS] for i in range(len(text) - SHINGLE_CHARS + 1)}


def _hash32(shingle: str) -> int:
    return int.from_bytes(hashlib.blake2b(shingle.encode(), digest_size=4).digest(), "big")


def signature(text: str) -> list[int]:
    """Return the MinHash signature (PERMUTATIONS values below 2^61) of ``text``."""
    hashes = np.fromiter((_hash32(shingle) for shingle in shingles(text)), dtype=np.uint64)
    permuted = (np.outer(hashes, _A) + _B) % np.uint64(_PRIME)
    return [int(value) for value in permuted.min(axis=0)]


def bands(sig: list[int]) -> list[int]:
    """Return the BANDS band hashes of a signature, each below 2^63 (fits a signed 64-bit column)."""
    out = []
    for band in range(BANDS):
        chunk = ",".join(str(value) for value in sig[band * ROWS : (band + 1) * ROWS])
        out.append(int.from_bytes(hashlib.blake2b(chunk.encode(), digest_size=8).digest(), "big") >> 1)
    return out


def similarity(first: list[int], second: list[int]) -> float:
    """Return the estimated Jaccard similarity of two signatures (the fraction of equal values)."""
    return sum(a == b for a, b in zip(first, second, strict=True)) / PERMUTATIONS


def jaccard(first: str, second: str) -> float:
    """Return the exact Jaccard similarity of two texts' shingle sets (for tests and calibration)."""
    a, b = shingles(first), shingles(second)
    return len(a & b) / len(a | b)
