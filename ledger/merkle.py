"""Build Merkle trees and proofs byte-for-byte like OpenZeppelin's StandardMerkleTree.

A leaf is ``keccak256(keccak256(abi.encode(values)))``; inner nodes hash their two children in
sorted order; leaves are sorted by hash (stably, so duplicates keep input order) and laid out as
``@openzeppelin/merkle-tree`` does, so roots and proofs match ``StandardMerkleTree.of(values, types)``
and verify with ``MerkleProof`` on chain.

Run ``python -m ledger.merkle`` with ``{"types": [...], "values": [[...], ...]}`` on stdin to print
``{"root": "0x…", "proofs": [[...], ...]}`` (one proof per value, in input order); bad input exits 2.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
import reprlib
import sys
from collections.abc import Sequence

try:  # safe-pysha3: a C Keccak without per-call object set-up, about 6x faster than pycryptodome's here
    from sha3 import keccak_256 as _keccak_256
except ImportError:  # pragma: no cover - pycryptodome, slower, same digests
    from Crypto.Hash import keccak as _keccak_hash

    def _keccak_256(data: bytes = b""):
        return _keccak_hash.new(digest_bits=256, data=data)


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_UINT = re.compile(r"uint([1-9][0-9]{0,2})")
_DECIMAL = re.compile(r"[0-9]+")
_SUPPORTED_TYPES = "address, uint8 ... uint256"
# EIP-55 as bit masks: the high bit of each of an address's 40 nibbles, and letters mapped to that bit.
_HIGH_BITS = int("8" * 40, 16)
_UPPER_LETTERS = str.maketrans("0123456789ABCDEFabcdef", "0000000000888888000000")
_LOWER_LETTERS = str.maketrans("0123456789abcdef", "0000000000888888")
# checksum_address: 0x20 under each letter a-f, and under each hash digit 8-f (a nibble with its high bit set).
_LETTER_MASK = bytes(0x20 if chr(byte) in "abcdef" else 0 for byte in range(256))
_HIGH_NIBBLE_MASK = bytes(0x20 if chr(byte) in "89abcdef" else 0 for byte in range(256))


class MerkleInputError(ValueError):
    """Leaf types or values that StandardMerkleTree cannot encode."""


class StandardMerkleTree:
    """A complete binary tree over ABI-encoded leaves, stored as OpenZeppelin stores it."""

    def __init__(
        self,
        types: tuple[str, ...],
        values: tuple[tuple[object, ...], ...],
        nodes: list[bytes],
        tree_indices: list[int],
    ) -> None:
        self.types = types
        self.values = values
        self._nodes = nodes
        self._tree_indices = tree_indices
        self._hex_nodes: list[str] | None = None
        self._upper_proofs: dict[int, tuple[str, ...]] = {}

    @classmethod
    def of(
        cls, values: Sequence[Sequence[object]], types: Sequence[str], *, checksums: bool = True
    ) -> StandardMerkleTree:
        """Build the tree over ``values`` (each encoded as ``types``) with leaves sorted by hash.

        ``checksums=False`` skips the EIP-55 check of mixed-case addresses (for addresses this code base
        wrote itself); the encoding, and so the root, does not depend on the letters' case.
        """
        types = tuple(types)
        if not types:
            raise MerkleInputError("types: expected at least one ABI type")
        for position, type_name in enumerate(types):
            _check_type(type_name, f"types[{position}]")
        if not values:
            raise MerkleInputError("values: expected at least one leaf")
        width = len(types)
        for position, value in enumerate(values):
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise MerkleInputError(
                    f"values[{position}]: expected a list of {width} items, got {reprlib.repr(value)}"
                )
            if len(value) != width:
                raise MerkleInputError(
                    f"values[{position}]: expected {width} items ({', '.join(types)}), got {len(value)}"
                )
        checked: dict[str, bytes] = {}
        # One column at a time through map(): the per-item work stays in C except for the encoder itself.
        try:
            columns = [
                list(map(_encoder(type_name, checked, checksums), column))
                for type_name, column in zip(types, zip(*values, strict=True), strict=True)
            ]
        except _ItemError:
            for position, value in enumerate(values):  # find and name the bad item (raises)
                _leaf_hash(types, value, f"values[{position}]")
            raise AssertionError("an encoder refused an item that _word accepts") from None
        return cls._from_columns(types, columns, tuple(map(tuple, values)))

    @classmethod
    def _from_columns(
        cls, types: tuple[str, ...], columns: list[list[bytes]], values: tuple[tuple[object, ...], ...] = ()
    ) -> StandardMerkleTree:
        """Hash the leaves whose encoded words are ``columns`` (one list per type) and build the tree over them."""
        keccak_256 = _keccak_256
        join = b"".join
        leaves = [keccak_256(keccak_256(join(words)).digest()).digest() for words in zip(*columns, strict=True)]
        count = len(leaves)
        node_count = 2 * count - 1
        nodes = [b""] * node_count
        tree_indices = [0] * count
        order = sorted(range(count), key=leaves.__getitem__)
        # Leaves fill the last `count` slots in reverse hash order (OpenZeppelin's layout).
        nodes[node_count - count :] = [leaves[value_index] for value_index in reversed(order)]
        for rank, value_index in enumerate(order):
            tree_indices[value_index] = node_count - 1 - rank
        for parent in range(node_count - 1 - count, -1, -1):
            left, right = nodes[2 * parent + 1], nodes[2 * parent + 2]
            nodes[parent] = keccak_256(left + right if left <= right else right + left).digest()
        return cls(types, values, nodes, tree_indices)

    @classmethod
    def of_uint256_words(cls, words: Sequence[Sequence[int]], width: int) -> StandardMerkleTree:
        """Build the tree ``of`` builds over the decimal strings of ``words`` (leaves of ``width`` uint256 ints).

        The words are hashed as they are (no decimal string parsed back) and the tree's values are their decimal
        strings, as ``of`` keeps them: ``[list(value) for value in tree.values]`` are the leaves to publish.
        """
        types = ("uint256",) * width
        if not words:
            raise MerkleInputError("values: expected at least one leaf")
        to_word = operator.methodcaller("to_bytes", 32, "big")  # OverflowError outside 0 .. 2**256 - 1
        try:
            # Exactly ints (a bool would encode as 0 or 1 but publish "True"), all rows ``width`` long; in C via map.
            if set(map(len, words)) != {width} or set(map(type, itertools.chain.from_iterable(words))) != {int}:
                raise OverflowError
            columns = [list(map(to_word, column)) for column in zip(*words, strict=True)]
        except (OverflowError, TypeError):
            for position, value in enumerate(words):  # find and name the bad item (raises)
                for column, item in enumerate(value if len(value) == width else ()):
                    if type(item) is not int:
                        raise MerkleInputError(
                            f"values[{position}][{column}]: expected an int word, got {reprlib.repr(item)}"
                        ) from None
                _leaf_hash(types, value, f"values[{position}]")
            raise AssertionError("to_bytes refused an item that _word accepts") from None
        tree = cls._from_columns(types, columns)
        tree.values = tuple(tuple(map(str, value)) for value in words)
        return tree

    def __len__(self) -> int:
        return len(self.values)

    @property
    def root(self) -> str:
        """Return the root as 0x-prefixed lowercase hex."""
        return _hex(self._nodes[0])

    def get_proof(self, index: int) -> list[str]:
        """Return the sibling hashes from the leaf of ``values[index]`` up to the root."""
        if not 0 <= index < len(self.values):
            raise IndexError(f"leaf index {index} out of range for {len(self.values)} leaves")
        if self._hex_nodes is None:
            self._hex_nodes = ["0x" + node.hex() for node in self._nodes]
        hex_nodes = self._hex_nodes
        tree_index = self._tree_indices[index]
        proof = []
        append = proof.append
        # The lowest levels are walked; above them, 16 or more leaves share each node's path, kept once.
        shared_below = max(len(self._nodes) >> 4, 1)
        while tree_index >= shared_below:
            # The sibling: the right one (i + 1) of a left child (odd i), else the left one (i - 1).
            tree_index -= 1
            append(hex_nodes[(tree_index ^ 1) + 1])
            tree_index >>= 1
        if tree_index:
            proof += self._upper_proof(tree_index)
        return proof

    def _upper_proof(self, tree_index: int) -> tuple[str, ...]:
        """Return the proof of inner node ``tree_index`` (a tuple, kept for the next leaf below it)."""
        known = self._upper_proofs.get(tree_index)
        if known is None:
            parent = (tree_index - 1) >> 1
            sibling = self._hex_nodes[((tree_index - 1) ^ 1) + 1]
            known = (sibling, *self._upper_proof(parent)) if parent else (sibling,)
            self._upper_proofs[tree_index] = known
        return known

    def leaf_hash(self, value: Sequence[object]) -> str:
        """Return the leaf hash of ``value`` encoded with this tree's types."""
        return _hex(_leaf_hash(self.types, value, "value"))


def verify(root: str | bytes, leaf: str | bytes, proof: Sequence[str | bytes]) -> bool:
    """Tell whether ``proof`` links the leaf hash ``leaf`` to ``root``, as ``MerkleProof.verify`` does."""
    node = _to_bytes(leaf)
    for sibling in proof:
        node = _hash_pair(node, _to_bytes(sibling))
    return node == _to_bytes(root)


def _leaf_hash(types: tuple[str, ...], value: Sequence[object], where: str) -> bytes:
    """Return keccak256(keccak256(abi.encode(value))) for one leaf; ``where`` names it in errors."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise MerkleInputError(f"{where}: expected a list of {len(types)} items, got {reprlib.repr(value)}")
    if len(value) != len(types):
        raise MerkleInputError(f"{where}: expected {len(types)} items ({', '.join(types)}), got {len(value)}")
    # abi.encode of static types (address, uintN) is one 32-byte big-endian word per value.
    checked: dict[str, bytes] = {}
    encoded = b"".join(
        _word(type_name, item, f"{where}[{position}]", checked, checksums=True)
        for position, (type_name, item) in enumerate(zip(types, value, strict=True))
    )
    return keccak(keccak(encoded))


class _ItemError(Exception):
    """An item an encoder refused; the tree re-encodes slowly to name its position."""


def _encoder(type_name: str, checked: dict[str, bytes], checksums: bool):
    """Return a function ABI-encoding one item of ``type_name`` as a 32-byte word (``checked`` caches addresses)."""
    if type_name == "address":

        def encode_address(item: object) -> bytes:
            word = checked.get(item) if type(item) is str else None
            if word is None:
                try:
                    word = _word(type_name, item, "", checked, checksums=checksums)
                except MerkleInputError:
                    raise _ItemError from None
            return word

        return encode_address
    limit = 2 ** int(type_name[4:])

    def encode_uint(item: object) -> bytes:
        # The common cases inline: an int, or a decimal string of ASCII digits, in range.
        if type(item) is int:
            if 0 <= item < limit:
                return item.to_bytes(32, "big")
        elif type(item) is str and item.isascii() and item.isdigit():
            number = int(item)
            if number < limit:
                return number.to_bytes(32, "big")
        raise _ItemError

    return encode_uint


def keccak(data: bytes) -> bytes:
    """Return the Keccak-256 digest of ``data`` (the EVM's keccak256, not NIST SHA3-256)."""
    return _keccak_256(data).digest()


def _check_type(type_name: object, where: str) -> None:
    if type_name == "address":
        return
    match = _UINT.fullmatch(type_name) if isinstance(type_name, str) else None
    if match is None or int(match[1]) > 256 or int(match[1]) % 8:
        raise MerkleInputError(f"{where}: unsupported type {reprlib.repr(type_name)} (supported: {_SUPPORTED_TYPES})")


def _word(type_name: str, item: object, where: str, checked: dict[str, bytes], *, checksums: bool) -> bytes:
    """Return ``item`` ABI-encoded as ``type_name``: one 32-byte word; ``checked`` caches validated addresses."""
    if type_name == "address":
        if isinstance(item, str) and item in checked:
            return checked[item]
        if not isinstance(item, str) or not _ADDRESS.fullmatch(item):
            raise MerkleInputError(f"{where}: invalid address {reprlib.repr(item)}")
        digits = item[2:]
        lower = digits.lower()
        if checksums and digits not in (lower, digits.upper()) and not _checksum_valid(digits, lower):
            raise MerkleInputError(f"{where}: address {item} has a bad checksum")
        word = checked[item] = bytes(12) + bytes.fromhex(lower)
        return word
    bits = int(type_name[4:])
    if isinstance(item, str) and _DECIMAL.fullmatch(item):
        number = int(item)
    elif isinstance(item, int) and not isinstance(item, bool):
        number = item
    else:
        raise MerkleInputError(
            f"{where}: expected a {type_name} as an integer or decimal string, got {reprlib.repr(item)}"
        )
    if not 0 <= number < 2**bits:
        raise MerkleInputError(f"{where}: {number} is out of range for {type_name}")
    return number.to_bytes(32, "big")


def _checksum_valid(digits: str, lower: str) -> bool:
    """Tell whether mixed-case hex ``digits`` capitalise exactly the letters EIP-55 does (nibble of hash >= 8)."""
    hash_bits = int.from_bytes(keccak(lower.encode("ascii"))[:20], "big") & _HIGH_BITS
    return int(digits.translate(_UPPER_LETTERS), 16) == hash_bits & int(lower.translate(_LOWER_LETTERS), 16)


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return _keccak_256(a + b if a <= b else b + a).digest()


def checksum_address(address: str) -> str:
    """Return ``0x`` + 40 hex digits in EIP-55 mixed case (the input is assumed to be 40 hex digits after 0x)."""
    lower = address[2:].lower().encode("ascii")
    # Upper-case a letter (subtract 0x20) where the hash's nibble has its high bit: byte-wise masks, no per-char loop.
    letters = int.from_bytes(lower.translate(_LETTER_MASK), "big")
    high = int.from_bytes(_keccak_256(lower).hexdigest()[:40].encode("ascii").translate(_HIGH_NIBBLE_MASK), "big")
    return "0x" + (int.from_bytes(lower, "big") - (letters & high)).to_bytes(40, "big").decode("ascii")


def _hex(node: bytes) -> str:
    return "0x" + node.hex()


def _to_bytes(node: str | bytes) -> bytes:
    if isinstance(node, bytes):
        return node
    return bytes.fromhex(node.removeprefix("0x"))


def _parse_request(text: str) -> tuple[list[str], list[list[object]]]:
    try:
        request = json.loads(text)
    except json.JSONDecodeError as error:
        raise MerkleInputError(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    if not isinstance(request, dict) or set(request) != {"types", "values"}:
        raise MerkleInputError('expected a JSON object with exactly the keys "types" and "values"')
    types, values = request["types"], request["values"]
    if not isinstance(types, list):
        raise MerkleInputError("types: expected a list of ABI type names")
    if not isinstance(values, list):
        raise MerkleInputError("values: expected a list of leaves")
    return types, values


def main() -> int:
    """Read a tree request from stdin, print its root and proofs to stdout, and return the exit status."""
    try:
        types, values = _parse_request(sys.stdin.read())
        tree = StandardMerkleTree.of(values, types)
    except MerkleInputError as error:
        print(f"merkle: {error}", file=sys.stderr)
        return 2
    json.dump({"root": tree.root, "proofs": [tree.get_proof(index) for index in range(len(tree))]}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
