"""python -m ledger.settlement.verify against Hardhat: a posted batch verifies, a tampered DA file does not."""

import hashlib
import json
import subprocess
import sys

from ledger.merkle import StandardMerkleTree
from ledger.settlement.batches import LEAF_TYPES, settlement_batch_run
from ledger.settlement.leaves import unpack
from ledger.settlement.verify import CONTRACT_LEAF_TYPES, main
from tests.contracts.conftest import REPO_ROOT
from tests.settlement.helpers import CONFIRMATIONS, claim_call, mine


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
    content["leaves"][0][1] = str(int(content["leaves"][0][1]) + (1 << 160))  # one more base unit for someone
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
        {"version": 4, "seq": 1, "settlement": live.settlement.address, "leaf_types": odd_types, "leaves": odd},
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


def post_da_copy(live, seq, content) -> bytes:
    """Post ``content`` (a DA copy the operator key made up) as batch ``seq``: its leaves' root and its hash."""
    content["root"] = StandardMerkleTree.of(content["leaves"], LEAF_TYPES).root
    body = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    digest = bytes.fromhex(hashlib.sha256(body).hexdigest())
    live.send(live.operator, live.settlement.functions.postBatch(seq, content["root"], digest, 0))
    return body


def test_a_second_batch_verifies_against_the_first_and_the_claim_bits_and_a_forged_paid_before_does_not(
    market, live, tmp_path, capsys
):
    """The guardian's check: paid_before, previous and the claim bits follow from the previous DA copy and the chain.

    A stolen operator key that lowers a leaf's paid_before (to pay a claimed amount twice) or flips its claim bits
    is caught before the root activates."""
    live.mint(live.usdc, live.settlement.address, 10**12)
    market.charge(3_000_000)
    first = settlement_batch_run()
    row = proof_for_provider(market)
    live.send(live.alice, claim_call(live.settlement, row))  # claimed against batch 1
    market.charge(1_000_000)
    mine(live, CONFIRMATIONS)
    second = settlement_batch_run()
    assert second.seq == 2
    previous = da_file(tmp_path, first.data.content.encode())
    path = tmp_path / "second.json"
    path.write_bytes(second.data.content.encode())

    args = [live.w3.provider.endpoint_uri, live.settlement.address]
    assert main([*args, "2", str(path), "--previous", str(previous)]) == 0
    out = capsys.readouterr().out
    assert "every leaf's previous and paid_before amounts follow from batch 1" in out
    assert "parity and claim bits match the chain" in out
    content = json.loads(second.data.content)
    leaf = unpack(content["leaves"][0])
    assert (leaf.paid_before, leaf.previous, leaf.parity) == (leaf.previous, 2_850_000, 1)

    # Batch 3, forged: paid_before back to 0 (batch 1's claim paid again), from a proper state block.
    mine(live, CONFIRMATIONS)
    forged = dict(content, seq=3, previous_seq=2, parity=0, state_block=live.w3.eth.block_number - CONFIRMATIONS)
    words = [int(word) for word in content["leaves"][0]]
    bits = live.settlement.functions.claimWords([leaf.index // 128]).call()[0] >> (2 * (leaf.index % 128)) & 3
    key = leaf.index | bits << 64 | 0 << 66  # paid_before 0, parity 0
    forged["leaves"] = [[str(key), str(words[1]), str(words[2] & (2**160 - 1) | leaf.cumulative << 160)]]
    mine(live, CONFIRMATIONS)
    body = post_da_copy(live, 3, forged)
    third = tmp_path / "third.json"
    third.write_bytes(body)

    assert main([*args, "3", str(third), "--previous", str(path)]) == 1
    out = capsys.readouterr().out
    assert "previous / paid_before amounts do not follow from batch 2" in out
    # Batch 4, forged as a contract's first root (nothing before it, so nothing claimed): batch 3 was claimable.
    mine(live, CONFIRMATIONS)
    fresh = dict(forged, seq=4, previous_seq=None, state_block=live.w3.eth.block_number - CONFIRMATIONS)
    mine(live, CONFIRMATIONS)
    fourth = tmp_path / "fourth.json"
    fourth.write_bytes(post_da_copy(live, 4, fresh))
    assert main([*args, "4", str(fourth)]) == 1
    assert "builds on no earlier root, but batch 3 was claimable" in capsys.readouterr().out
    # The previous DA copy is checked against the hash posted for it: a copy served by the operator must be the one.
    assert main([*args, "2", str(path), "--previous", str(third)]) == 1
    assert "--previous is not the DA copy posted for batch 1" in capsys.readouterr().out


def proof_for_provider(market):
    from django.urls import reverse
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(market.provider)
    return client.get(reverse("settlement-proof")).json()["leaves"][0]
