"""The fast batch-building path (issue 18, item 5) gives exactly what the plain path gives, at a small size.

benchmarks/settlement_build_bench.py times it at 100,000 accounts against the previous code; these tests only
check that every shortcut is exact: the Keccak backend and EIP-55, leaves encoded column by column, the
keyed-once HMAC, allocation ids from INSERT ... RETURNING, and proofs served from the tree built at prepare.
"""

import hashlib
import json
import os
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from eth_utils import keccak as eth_keccak
from eth_utils import to_checksum_address

from ledger.merkle import MerkleInputError, StandardMerkleTree, checksum_address, keccak, verify
from ledger.models import BatchData, PayoutAllocation
from ledger.settlement import leaves as claim_leaves
from ledger.settlement.batches import LEAF_TYPES, _batch_data_store, settlement_batch_prepare
from ledger.settlement.commitments import batch_commitments, transaction_commitment, transaction_salt
from ledger.settlement.trees import tree_forget_all, tree_get
from tests.factories import UserFactory
from tests.settlement.helpers import leaf_amounts, link_wallet


def test_keccak_and_checksums_match_eth_utils():
    rng = random.Random(18)
    for size in (0, 1, 31, 32, 64, 135, 136, 137, 1000):
        data = rng.randbytes(size)
        assert keccak(data) == eth_keccak(data)
    for _ in range(500):
        address = "0x" + rng.randbytes(20).hex()
        assert checksum_address(address) == checksum_address(address.upper().replace("0X", "0x"))
        assert checksum_address(address) == to_checksum_address(address)


# ledger/merkle.py's address path (the DA copies of version 3 and the V2 contract): packed leaves have no addresses.
ADDRESS_LEAF_TYPES = ("uint256", "address", "address", "uint128")


def test_a_tree_without_the_checksum_check_is_the_same_tree_and_still_refuses_bad_items():
    rng = random.Random(5)
    token = to_checksum_address(rng.randbytes(20))
    values = [[i, token, to_checksum_address(rng.randbytes(20)), str(rng.randrange(1, 10**20))] for i in range(300)]
    checked = StandardMerkleTree.of(values, ADDRESS_LEAF_TYPES)
    unchecked = StandardMerkleTree.of(values, ADDRESS_LEAF_TYPES, checksums=False)

    assert checked.root == unchecked.root
    for index in (0, 7, 299):
        proof = unchecked.get_proof(index)
        assert proof == checked.get_proof(index)
        assert verify(unchecked.root, unchecked.leaf_hash(values[index]), proof)
    bad_case = [row[:] for row in values]
    bad_case[3][2] = bad_case[3][2][:2] + bad_case[3][2][2:].swapcase()  # a wrong checksum
    with pytest.raises(MerkleInputError, match=r"values\[3\]\[2\]: address .* bad checksum"):
        StandardMerkleTree.of(bad_case, ADDRESS_LEAF_TYPES)
    assert StandardMerkleTree.of(bad_case, ADDRESS_LEAF_TYPES, checksums=False).root == checked.root
    for item, message in (
        ("12x", r"values\[9\]\[3\]: expected a uint128"),
        (2**128, r"values\[9\]\[3\]: .* out of range"),
    ):
        broken = [row[:] for row in values]
        broken[9][3] = item
        with pytest.raises(MerkleInputError, match=message):
            StandardMerkleTree.of(broken, ADDRESS_LEAF_TYPES, checksums=False)


def test_a_tree_of_uint256_words_is_the_tree_of_their_decimal_strings_and_refuses_what_of_refuses():
    rng = random.Random(256)
    words = [tuple(rng.randrange(2**256) for _ in range(3)) for _ in range(257)] + [(0, 2**256 - 1, 1)]
    strings = [[str(item) for item in value] for value in words]
    tree = StandardMerkleTree.of_uint256_words(words, 3)
    plain = StandardMerkleTree.of(strings, LEAF_TYPES)

    assert tree.root == plain.root and tree.values == plain.values and tree.types == plain.types
    assert [tree.get_proof(i) for i in (0, 100, 257)] == [plain.get_proof(i) for i in (0, 100, 257)]
    for bad, message in (
        ((0, 2**256, 1), r"values\[1\]\[1\]: .* out of range"),
        ((0, -1, 1), r"values\[1\]\[1\]: .* out of range"),
        ((0, "1", 1), r"values\[1\]\[1\]: expected an int word"),
        ((0, True, 1), r"values\[1\]\[1\]: expected an int word"),
        ((0, 1), r"values\[1\]: expected 3 items"),
    ):
        with pytest.raises(MerkleInputError, match=message):
            StandardMerkleTree.of_uint256_words([words[0], bad], 3)
    with pytest.raises(MerkleInputError, match="at least one leaf"):
        StandardMerkleTree.of_uint256_words([], 3)


def test_batch_commitments_equal_the_commitment_the_api_reveals():
    key = os.urandom(32).hex()
    rows = [(pk, eth_keccak(text=str(pk)).hex()) for pk in (1, 2, 99, 10**12)]
    assert batch_commitments(key=key, rows=[]) == []
    assert batch_commitments(key=key, rows=rows) == [
        [pk, transaction_commitment(salt=transaction_salt(key=key, transaction_id=pk), fingerprint=fingerprint)]
        for pk, fingerprint in rows
    ]


def test_prepare_keeps_its_tree_for_the_proofs_and_a_rebuild_from_the_da_copy_is_identical(market, live):
    others = [UserFactory() for _ in range(5)]
    for number, user in enumerate(others):
        link_wallet(user, to_checksum_address(eth_keccak(text=f"build-path-{number}")[:20]).lower())
    market.charge(3_000_000)
    for user in others:
        market.provider, earner = user, market.provider
        market.charge(1_000_000 + user.pk)
        market.provider = earner

    batch = settlement_batch_prepare()

    leaves = leaf_amounts(json.loads(batch.data.content))
    # Each leaf's index is its (currency, address)'s first allocation id, as the plain query finds it.
    first_ids = {(row.currency, row.address): row.pk for row in PayoutAllocation.objects.order_by("-pk")}
    assert sorted(leaf[0] for leaf in leaves) == sorted(first_ids.values())
    assert all(leaf[2] == to_checksum_address(leaf[2]) for leaf in leaves)  # lower-case wallets checksummed
    with CaptureQueriesContext(connection) as queries:
        kept = tree_get(sha256=batch.data_id)
    assert len(queries) == 0 and kept.tree.root == batch.root  # served from the tree prepare built
    proofs = [kept.tree.get_proof(position) for position in range(len(leaves))]
    tree_forget_all()
    rebuilt = tree_get(sha256=batch.data_id)  # another process: built once from the stored DA copy
    assert rebuilt is not kept and rebuilt.tree.root == batch.root
    # What prepare passed in (from its checksummed amounts) is what the leaves give back; the values are the same
    # decimal strings though prepare hashed the packed ints.
    assert kept.position == rebuilt.position and len(kept.position) == len(leaves)
    assert kept.tree.values == rebuilt.tree.values
    assert [rebuilt.tree.get_proof(position) for position in range(len(leaves))] == proofs
    assert StandardMerkleTree.of(json.loads(batch.data.content)["leaves"], LEAF_TYPES).root == batch.root
    # The DA copy went in as a bound parameter: stored byte for byte, and storing the same copy again is the same row.
    stored = BatchData.objects.get(sha256=batch.data_id)
    assert hashlib.sha256(stored.content.encode()).hexdigest() == batch.data_id == batch.data.sha256
    assert batch.data.content == stored.content and batch.data.created_at == stored.created_at
    again = _batch_data_store(sha256=stored.sha256, content=stored.content)
    assert (again.pk, again.created_at, BatchData.objects.count()) == (stored.pk, stored.created_at, 1)


def test_the_batch_packer_gives_exactly_the_leaves_of_the_plain_leaf_builder():
    rng = random.Random(18)
    tokens = [to_checksum_address(rng.randbytes(20)) for _ in range(2)]
    rows = [
        (index, rng.choice(tokens), to_checksum_address(rng.randbytes(20)), rng.randrange(1, 2**90))
        for index in rng.sample(range(2**20), 400)
    ]
    words = {slot: rng.randrange(2**256) for slot in claim_leaves.word_slots(row[0] for row in rows)}
    # A previous root (parity 1) for most indices, built from other bits; some indices are new, some carried over.
    earlier = {}
    for index, token, account, cumulative in rows[:300]:
        earlier[index] = claim_leaves.ClaimLeaf(
            index, token, account, cumulative // 2, cumulative // 4, cumulative // 8, 1, rng.randrange(4)
        )
    carried = {row[0]: row[3] // 3 for row in rows[300:350]}

    packed = claim_leaves.pack_batch(
        rows,
        parity=0,
        words=words,
        previous=claim_leaves.parse_words(leaf.values() for leaf in earlier.values()),
        carried=carried,
    )

    plain = [
        claim_leaves.next_leaf(
            index=index,
            token=token,
            account=account,
            cumulative=cumulative,
            parity=0,
            bits_now=claim_leaves.bits_of(words, index),
            previous_leaf=earlier.get(index),
            carried=carried.get(index, 0),
        ).values()
        for index, token, account, cumulative in rows
    ]
    assert packed == plain
    assert [claim_leaves.unpack(leaf).account for leaf in packed] == [row[2].lower() for row in rows]
    for bad, message in (
        ((5, tokens[0], rows[0][2], 2**96), "cumulative .* does not fit 96 bits"),
        ((2**64, tokens[0], rows[0][2], 1), "index .* does not fit 64 bits"),
    ):
        with pytest.raises(claim_leaves.LeafRangeError, match=message):
            claim_leaves.pack_batch([bad], parity=0, words={}, previous={}, carried={})
    with pytest.raises(claim_leaves.LeafRangeError, match="other parity"):
        claim_leaves.pack_batch(
            rows[:1],
            parity=1,
            words=words,
            previous=claim_leaves.parse_words([earlier[rows[0][0]].values()]),
            carried={},
        )
