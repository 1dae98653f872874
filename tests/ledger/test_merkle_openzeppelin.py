"""Compare ledger.merkle with the npm package @openzeppelin/merkle-tree on random trees."""

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import StandardMerkleTree

REPO_ROOT = Path(__file__).resolve().parents[2]
OZ_MERKLE_SCRIPT = REPO_ROOT / "tests" / "js" / "oz_merkle.js"
MAX_LEAVES = 40

OpenZeppelinTree = Callable[[list[str], list[list[object]]], dict]

raw_addresses = st.binary(min_size=20, max_size=20)
addresses = st.one_of(raw_addresses.map(to_checksum_address), raw_addresses.map(lambda raw: "0x" + raw.hex()))
uint_types = st.sampled_from([8, 16, 64, 128, 160, 256]).map(lambda bits: f"uint{bits}")


def values_of(abi_type: str) -> st.SearchStrategy[object]:
    """Return a strategy for values of a supported ABI type."""
    if abi_type == "address":
        return addresses
    return st.integers(min_value=0, max_value=2 ** int(abi_type[4:]) - 1)


@st.composite
def trees(draw: st.DrawFn, types: st.SearchStrategy[list[str]]) -> tuple[list[str], list[list[object]]]:
    """Draw leaf types and 1 to MAX_LEAVES values, some of them repeated as OpenZeppelin allows."""
    leaf_types = draw(types)
    leaf = st.tuples(*(values_of(abi_type) for abi_type in leaf_types)).map(list)
    distinct = draw(st.lists(leaf, min_size=1, max_size=MAX_LEAVES))
    repeats = draw(st.lists(st.sampled_from(distinct), max_size=MAX_LEAVES - len(distinct)))
    return leaf_types, draw(st.permutations(distinct + repeats))


settlement_trees = trees(st.just(["address", "address", "uint256"]))
mixed_trees = trees(st.lists(st.one_of(st.just("address"), uint_types), min_size=1, max_size=4))


@pytest.fixture(scope="module")
def openzeppelin_tree() -> Iterator[OpenZeppelinTree]:
    """Serve trees from one long-lived node process running @openzeppelin/merkle-tree."""
    if not (REPO_ROOT / "node_modules" / "@openzeppelin" / "merkle-tree").is_dir():
        pytest.fail("node_modules/@openzeppelin/merkle-tree is missing: run `npm ci` at the repository root")
    process = subprocess.Popen(
        ["node", str(OZ_MERKLE_SCRIPT)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None

    def build(types: list[str], values: list[list[object]]) -> dict:
        as_json = [[item if isinstance(item, str) else str(item) for item in value] for value in values]
        process.stdin.write(json.dumps({"types": types, "values": as_json}) + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        assert line, f"{OZ_MERKLE_SCRIPT.name} exited with status {process.poll()}"
        return json.loads(line)

    yield build
    process.stdin.close()
    process.wait(timeout=10)


def assert_same_tree(openzeppelin_tree: OpenZeppelinTree, types: list[str], values: list[list[object]]) -> None:
    """Assert that our root and every proof, in input order, equal OpenZeppelin's."""
    tree = StandardMerkleTree.of(values, types)
    expected = openzeppelin_tree(types, values)

    assert tree.root == expected["root"]
    assert [tree.get_proof(index) for index in range(len(values))] == expected["proofs"]


@settings(max_examples=200, deadline=None)
@given(settlement_trees)
def test_settlement_trees_match_openzeppelin(openzeppelin_tree, tree):
    assert_same_tree(openzeppelin_tree, *tree)


@settings(max_examples=100, deadline=None)
@given(mixed_trees)
def test_trees_of_other_address_and_uint_types_match_openzeppelin(openzeppelin_tree, tree):
    assert_same_tree(openzeppelin_tree, *tree)


@pytest.mark.parametrize("leaf_count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 40])
def test_every_tree_shape_up_to_40_leaves_matches_openzeppelin(openzeppelin_tree, leaf_count):
    token = "0x" + "ab" * 20
    values = [[token, to_checksum_address(index.to_bytes(20)), 10**6 * index] for index in range(leaf_count)]

    assert_same_tree(openzeppelin_tree, ["address", "address", "uint256"], values)
