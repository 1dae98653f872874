"""python -m ledger.settlement.verify against Hardhat: a posted batch verifies, a tampered DA file does not."""

import hashlib
import json
import subprocess
import sys

from ledger.merkle import StandardMerkleTree
from ledger.settlement.batches import LEAF_TYPES, settlement_batch_run
from ledger.settlement.verify import CONTRACT_LEAF_TYPES, main
from tests.contracts.conftest import REPO_ROOT


def da_file(tmp_path, content: bytes):
    path = tmp_path / "batch.json"
    path.write_bytes(content)
    return path


def test_a_posted_batch_verifies_from_the_chain_and_its_da_file_alone(market, live, tmp_path):
    market.charge(3_000_000)
    batch = settlement_batch_run()
    path = da_file(tmp_path, batch.data.content.encode())

    # As a provider would run it: a separate process, no Django settings, nothing but the node and the file.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger.settlement.verify",
            live.w3.provider.endpoint_uri,
            live.settlement.address,
            str(batch.seq),
            str(path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: the file's SHA-256 equals the posted data hash" in result.stdout
    assert "leaves rebuild the posted root" in result.stdout
    assert "status: the claimable batch" in result.stdout
    assert result.stdout.strip().endswith("VERIFIED")


def test_a_tampered_da_file_fails(market, live, tmp_path, capsys):
    market.charge(3_000_000)
    batch = settlement_batch_run()
    content = json.loads(batch.data.content)
    content["leaves"][0][3] = str(int(content["leaves"][0][3]) + 1)  # one more base unit for someone
    path = da_file(tmp_path, json.dumps(content, sort_keys=True, separators=(",", ":")).encode())

    status = main([live.w3.provider.endpoint_uri, live.settlement.address, str(batch.seq), str(path)])

    out = capsys.readouterr().out
    assert status == 1
    assert "MISMATCH: the file's SHA-256 is" in out and out.strip().endswith("NOT VERIFIED")


def test_a_batch_that_is_not_on_chain_or_an_unreachable_node_fails(market, live, tmp_path, capsys):
    market.charge(3_000_000)
    batch = settlement_batch_run()
    path = da_file(tmp_path, batch.data.content.encode())

    assert main([live.w3.provider.endpoint_uri, live.settlement.address, "7", str(path)]) == 1
    assert "no BatchPosted event for seq 7" in capsys.readouterr().out
    assert main(["http://127.0.0.1:9", live.settlement.address, "1", str(path)]) == 2
    assert main([live.w3.provider.endpoint_uri, live.settlement.address, "1", str(tmp_path / "missing.json")]) == 2


def test_verify_insists_on_the_contracts_leaf_encoding(live, tmp_path, capsys):
    assert CONTRACT_LEAF_TYPES == list(LEAF_TYPES)
    leaves = [[0, live.usdc.address, live.alice.address, "5"], [1, live.usdc.address, live.bob.address, "6"]]
    # A record in another encoding ("address" first) whose root the operator posts anyway: it pays nobody.
    odd_types = ["uint256", "address", "uint256", "uint128"]
    odd = [[index, token, int(account, 16), amount] for index, token, account, amount in leaves]
    tree = StandardMerkleTree.of(odd, odd_types)
    body = json.dumps(
        {"version": 3, "seq": 1, "settlement": live.settlement.address, "leaf_types": odd_types, "leaves": odd},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    live.send(
        live.operator,
        live.settlement.functions.postBatch(1, tree.root, bytes.fromhex(hashlib.sha256(body).hexdigest()), 0),
    )

    status = main([live.w3.provider.endpoint_uri, live.settlement.address, "1", str(da_file(tmp_path, body))])

    assert status == 1
    assert "MISMATCH: leaf types" in capsys.readouterr().out
