"""Tests for ledger.merkle on its own: tree properties, fixed vectors and the command line."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import MerkleInputError, StandardMerkleTree, verify

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTLEMENT_TYPES = ["address", "address", "uint256"]
TOKEN = "0x" + "aa" * 20
ALICE = "0x" + "11" * 20
BOB = "0x" + "22" * 20

addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
settlement_leaves = st.lists(
    st.tuples(addresses, addresses, st.integers(min_value=0, max_value=2**256 - 1)), min_size=1, max_size=40
)


@given(settlement_leaves)
def test_every_proof_verifies_against_the_root(values):
    tree = StandardMerkleTree.of(values, SETTLEMENT_TYPES)

    for index, value in enumerate(values):
        assert verify(tree.root, tree.leaf_hash(value), tree.get_proof(index))


@given(settlement_leaves, st.data())
def test_root_does_not_depend_on_input_order(values, data):
    shuffled = data.draw(st.permutations(values))

    assert (
        StandardMerkleTree.of(shuffled, SETTLEMENT_TYPES).root == StandardMerkleTree.of(values, SETTLEMENT_TYPES).root
    )


@given(settlement_leaves.filter(lambda values: len(values) > 1), st.data())
def test_a_proof_with_a_flipped_bit_does_not_verify(values, data):
    tree = StandardMerkleTree.of(values, SETTLEMENT_TYPES)
    index = data.draw(st.integers(min_value=0, max_value=len(values) - 1))
    proof = [bytes.fromhex(node[2:]) for node in tree.get_proof(index)]
    step = data.draw(st.integers(min_value=0, max_value=len(proof) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=255))
    proof[step] = (int.from_bytes(proof[step]) ^ (1 << bit)).to_bytes(32)

    assert not verify(tree.root, tree.leaf_hash(values[index]), proof)


def test_matches_the_openzeppelin_readme_vector():
    tree = StandardMerkleTree.of(
        [
            ["0x1111111111111111111111111111111111111111", "5000000000000000000"],
            ["0x2222222222222222222222222222222222222222", "2500000000000000000"],
        ],
        ["address", "uint256"],
    )

    assert tree.root == "0xd4dee0beab2d53f2cc83e567171bd2820e49898130a22622b10ead383e90bd77"
    assert tree.get_proof(0) == ["0xb92c48e9d7abe27fd8dfd6b5dfdbfb1c9a463f80c712b66f3a5180a090cccafc"]
    assert tree.get_proof(1) == ["0xeb02c421cfa48976e66dfb29120745909ea3a0f843456c263cf8f1253483e283"]


def test_duplicate_leaves_keep_input_order_like_openzeppelin():
    value = ["0x1111111111111111111111111111111111111111", "5"]
    tree = StandardMerkleTree.of([value, value, value], ["address", "uint256"])
    leaf = "0xdc984b7043e0c8ae8e70bc0e6568af0135198234df994ba88ca915bbf0734048"

    assert tree.root == "0xdbea9401bc371dfab9bda206a5899dc3b8ca994e9bed549935d5b32e515cd414"
    assert tree.get_proof(0) == [leaf, leaf]
    assert tree.get_proof(1) == [leaf, leaf]
    assert tree.get_proof(2) == ["0x7743d00cb329bee4353c69034e01e13125c8cc1a8a3b9c509e8080ce9be3f459"]


def test_a_single_leaf_is_the_root_with_an_empty_proof():
    tree = StandardMerkleTree.of([[TOKEN, ALICE, 7]], SETTLEMENT_TYPES)

    assert tree.root == tree.leaf_hash([TOKEN, ALICE, 7])
    assert tree.get_proof(0) == []


def test_integers_and_decimal_strings_and_address_cases_hash_alike():
    tree = StandardMerkleTree.of([[TOKEN, ALICE, 7]], SETTLEMENT_TYPES)

    assert tree.leaf_hash([TOKEN.upper().replace("0X", "0x"), to_checksum_address(ALICE), "7"]) == tree.root


def test_get_proof_rejects_an_index_outside_the_values():
    tree = StandardMerkleTree.of([[TOKEN, ALICE, 1], [TOKEN, BOB, 2]], SETTLEMENT_TYPES)

    with pytest.raises(IndexError):
        tree.get_proof(2)
    with pytest.raises(IndexError):
        tree.get_proof(-1)


@pytest.mark.parametrize(
    ("types", "values", "message"),
    [
        (SETTLEMENT_TYPES, [], "values: expected at least one leaf"),
        ([], [[]], "types: expected at least one ABI type"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE]], "values[0]: expected 3 items"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE, 1], "oops"], "values[1]: expected a list of 3 items"),
        (SETTLEMENT_TYPES, [[TOKEN, "0x1234", 1]], "values[0][1]: invalid address"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE.replace("0x", "0X"), 1]], "values[0][1]: invalid address"),
        (SETTLEMENT_TYPES, [[TOKEN, "0xAbcdef" + "ab" * 17, 1]], "values[0][1]: address 0xAbcdef"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE, -1]], "values[0][2]: -1 is out of range for uint256"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE, 2**256]], f"values[0][2]: {2**256} is out of range"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE, "-1"]], "values[0][2]: expected a uint256"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE, 1.5]], "values[0][2]: expected a uint256"),
        (SETTLEMENT_TYPES, [[TOKEN, ALICE, True]], "values[0][2]: expected a uint256"),
        (["address", "uint8"], [[TOKEN, 256]], "values[0][1]: 256 is out of range for uint8"),
        (["address", "bytes32"], [[TOKEN, "0x00"]], "types[1]: unsupported type 'bytes32'"),
        (["uint7"], [[1]], "types[0]: unsupported type 'uint7'"),
        (["uint264"], [[1]], "types[0]: unsupported type 'uint264'"),
    ],
)
def test_of_rejects_values_it_cannot_encode(types, values, message):
    with pytest.raises(MerkleInputError) as excinfo:
        StandardMerkleTree.of(values, types)

    assert str(excinfo.value).startswith(message)


def run_main(monkeypatch, capsys, stdin: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = merkle.main()
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_main_prints_the_root_and_one_proof_per_value_in_input_order(monkeypatch, capsys):
    values = [[TOKEN, ALICE, 5], [TOKEN, BOB, "6"], [TOKEN, ALICE, 5]]

    status, out, err = run_main(monkeypatch, capsys, json.dumps({"types": SETTLEMENT_TYPES, "values": values}))

    tree = StandardMerkleTree.of(values, SETTLEMENT_TYPES)
    assert (status, err) == (0, "")
    assert json.loads(out) == {"root": tree.root, "proofs": [tree.get_proof(index) for index in range(3)]}


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("{not json", "merkle: invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        ("[]", 'merkle: expected a JSON object with exactly the keys "types" and "values"'),
        ('{"types": ["uint256"]}', 'merkle: expected a JSON object with exactly the keys "types" and "values"'),
        ('{"types": "uint256", "values": [[1]]}', "merkle: types: expected a list of ABI type names"),
        ('{"types": ["uint256"], "values": {"0": [1]}}', "merkle: values: expected a list of leaves"),
        ('{"types": ["uint256"], "values": []}', "merkle: values: expected at least one leaf"),
        ('{"types": ["uint256"], "values": [[1, 2]]}', "merkle: values[0]: expected 1 items (uint256), got 2"),
        ('{"types": ["address"], "values": [["0xzz"]]}', "merkle: values[0][0]: invalid address '0xzz'"),
        ('{"types": ["uint256"], "values": [[-3]]}', "merkle: values[0][0]: -3 is out of range for uint256"),
        ('{"types": ["string"], "values": [["a"]]}', "merkle: types[0]: unsupported type 'string'"),
    ],
)
def test_main_rejects_bad_input_with_status_2_and_one_line(monkeypatch, capsys, stdin, message):
    status, out, err = run_main(monkeypatch, capsys, stdin)

    assert (status, out) == (2, "")
    assert err.startswith(message)
    assert err.count("\n") == 1


def test_module_runs_as_a_command_without_importing_django():
    request = json.dumps({"types": SETTLEMENT_TYPES, "values": [[TOKEN, ALICE, 5], [TOKEN, BOB, 6]]})
    ok = subprocess.run(
        [sys.executable, "-m", "ledger.merkle"], input=request, capture_output=True, text=True, cwd=REPO_ROOT
    )
    bad = subprocess.run(
        [sys.executable, "-m", "ledger.merkle"], input="[]", capture_output=True, text=True, cwd=REPO_ROOT
    )
    imports = subprocess.run(
        [sys.executable, "-c", "import sys, ledger.merkle; print(sorted(m for m in sys.modules if 'django' in m))"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )

    assert ok.returncode == 0
    assert json.loads(ok.stdout)["root"] == StandardMerkleTree.of(json.loads(request)["values"], SETTLEMENT_TYPES).root
    assert (bad.returncode, bad.stdout) == (2, "")
    assert imports.stdout == "[]\n"
