"""static/js/eth-abi.js (the Payouts page's proof check and claim calldata) against ledger/merkle.py and web3.

Node loads the same file the browser does, with the same js-sha3 that scripts/vendor-js.js copies.
"""

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from eth_utils import to_checksum_address
from web3 import Web3

from ledger.chain.artifacts import SETTLEMENT_CONTRACT, load_artifact
from ledger.merkle import StandardMerkleTree
from ledger.settlement.leaves import ClaimLeaf

ROOT = Path(__file__).resolve().parents[2]
LEAF_TYPES = ["uint256", "uint256", "uint256"]
SCRIPT = """
const eth = require(process.argv[1]);
const {values, proofs} = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = values.map((v, i) => {
  const leaf = eth.leafHash(...v);
  const calldata = eth.claimCalldata(...v, proofs[i]);
  return {leaf, root: eth.processProof(leaf, proofs[i]), calldata, fields: eth.leafFields(...v)};
});
let errors = [];
const a = "0x" + "11".repeat(20);
for (const bad of [["1", "0x12x", a], ["1", a, (1n << 256n).toString()], ["-1", a, "1"]]) {
  try { eth.leafHash(...bad); errors.push("accepted " + bad); } catch (e) { errors.push("refused"); }
}
console.log(JSON.stringify({out, errors, units: [eth.toBaseUnits("2.5", 6), eth.toBaseUnits("1", 18)]}));
"""


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: install Node.js 20+ (make system-deps)")
    return node


def test_the_browser_leaf_hash_proof_and_calldata_match_python_and_the_abi():
    rng = random.Random(14)
    token = to_checksum_address("0x" + "ab" * 20)
    fields = [
        ClaimLeaf(
            index=rng.choice([index, 2**64 - 1 - index]),
            token=token,
            account=to_checksum_address(rng.randbytes(20)),
            cumulative=rng.choice([1, 2**96 - 1, rng.randrange(10**28)]),
            previous=rng.choice([0, 2**96 - 1, rng.randrange(10**28)]),
            paid_before=rng.choice([0, 2**96 - 1, rng.randrange(10**28)]),
            parity=rng.randrange(2),
            bits=rng.randrange(4),
        )
        for index in range(37)
    ]
    values = [list(leaf.words()) for leaf in fields]
    tree = StandardMerkleTree.of(values, LEAF_TYPES)
    proofs = [tree.get_proof(i) for i in range(len(values))]
    request = json.dumps({"values": [[str(word) for word in v] for v in values], "proofs": proofs})

    result = subprocess.run(
        [node_binary(), "-e", SCRIPT, str(ROOT / "static" / "js" / "eth-abi.js")],
        input=request,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    answer = json.loads(result.stdout)

    settlement = Web3().eth.contract(abi=load_artifact(SETTLEMENT_CONTRACT).abi)
    for value, proof, browser in zip(values, proofs, answer["out"], strict=True):
        assert browser["leaf"] == tree.leaf_hash(value)
        assert browser["root"] == tree.root
        assert browser["calldata"] == settlement.encode_abi("claim", args=[*value, proof])
    for leaf, browser in zip(fields, answer["out"], strict=True):
        assert browser["fields"] == {
            "index": str(leaf.index),
            "token": leaf.token.lower(),
            "account": leaf.account.lower(),
            "cumulative": str(leaf.cumulative),
            "previous": str(leaf.previous),
            "paidBefore": str(leaf.paid_before),
        }
    assert answer["errors"] == ["refused", "refused", "refused"]
    assert answer["units"] == ["2500000", str(10**18)]
