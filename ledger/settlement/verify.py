"""Check a posted settlement batch against its DA file, using only the chain and the file (no Janction API).

Usage: python -m ledger.settlement.verify <rpc-url> <settlement-address> <seq> <da-file> [--from-block N]

Reads batch ``seq``'s `BatchPosted` event (root and data hash) from the chain, checks that the file's
SHA-256 is that data hash, rebuilds the Merkle tree from the file's leaves and checks that it gives the
posted root. Also says whether the batch is claimable, still inside its delay, or was rejected by the
guardian. Exit status: 0 verified, 1 the batch does not match (or is not on chain), 2 bad arguments or an
unreachable node.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests
from hexbytes import HexBytes
from web3 import Web3

from ledger.chain.artifacts import SETTLEMENT_CONTRACT
from ledger.chain.client import contract_at
from ledger.chain.node import ChainConfigError, provider_for
from ledger.merkle import MerkleInputError, StandardMerkleTree

# DA versions whose leaves this command can rebuild (3: indexed leaves for Settlement v2).
SUPPORTED_VERSIONS = (3,)
# What Settlement.claim hashes: a root over any other encoding would verify here but pay nobody on chain.
CONTRACT_LEAF_TYPES = ["uint256", "address", "address", "uint128"]


@dataclass
class Report:
    """What the verification found: facts that held, and problems."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def batch_verify(*, w3: Web3, settlement_address: str, seq: int, data: bytes, from_block: int = 0) -> Report:
    """Check batch ``seq`` on chain against the DA file ``data``; return what held and what did not."""
    report = Report()
    settlement = contract_at(w3, SETTLEMENT_CONTRACT, settlement_address)
    posted = settlement.events.BatchPosted().get_logs(
        argument_filters={"seq": seq}, from_block=from_block, to_block="latest"
    )
    if not posted:
        report.problems.append(f"no BatchPosted event for seq {seq} on chain (from block {from_block})")
        return report
    if len(posted) > 1:
        report.problems.append(f"{len(posted)} BatchPosted events for seq {seq}; the contract allows one")
    event = posted[-1]
    root = HexBytes(event["args"]["root"]).to_0x_hex()
    data_hash = HexBytes(event["args"]["dataHash"]).to_0x_hex()
    report.facts.append(f"batch {seq} posted in block {event['blockNumber']}: root {root}, data hash {data_hash}")
    digest = "0x" + hashlib.sha256(data).hexdigest()
    if digest != data_hash:
        report.problems.append(f"the file's SHA-256 is {digest}, not the data hash posted on chain")
        return report
    report.facts.append("the file's SHA-256 equals the posted data hash")
    try:
        content = json.loads(data)
        if content.get("version") not in SUPPORTED_VERSIONS:
            report.problems.append(f"DA version {content.get('version')!r} is not one of {SUPPORTED_VERSIONS}")
            return report
        if content.get("leaf_types") != CONTRACT_LEAF_TYPES:
            report.problems.append(
                f"leaf types {content.get('leaf_types')!r} are not the contract's {CONTRACT_LEAF_TYPES}"
            )
            return report
        tree = StandardMerkleTree.of(content["leaves"], content["leaf_types"])
    except (ValueError, KeyError, TypeError, AttributeError, MerkleInputError) as error:
        report.problems.append(f"the file is not a readable DA copy: {error}")
        return report
    if content.get("seq") != seq:
        report.problems.append(f"the file says seq {content.get('seq')!r}, not {seq}")
    if Web3.to_checksum_address(str(content.get("settlement", "0x" + "0" * 40))) != settlement.address:
        report.problems.append(f"the file names settlement contract {content.get('settlement')!r}")
    if tree.root != root:
        report.problems.append(f"the leaves rebuild root {tree.root}, not the posted root")
    else:
        report.facts.append(f"the {len(tree):,} leaves rebuild the posted root")
    report.facts.append(_status(settlement, seq, from_block))
    return report


def _status(settlement, seq: int, from_block: int) -> str:
    rejected = settlement.events.BatchRejected().get_logs(
        argument_filters={"seq": seq}, from_block=from_block, to_block="latest"
    )
    if rejected:
        return f"status: rejected by the guardian in block {rejected[-1]['blockNumber']} (never claimable)"
    active, pending = settlement.functions.activeSeq().call(), settlement.functions.pendingSeq().call()
    if pending == seq:
        return f"status: pending, claimable from timestamp {settlement.functions.activatesAt().call()}"
    if active == seq:
        return "status: the claimable batch" + (" (claims paused)" if settlement.functions.paused().call() else "")
    return f"status: superseded (batch {active} is claimable now)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m ledger.settlement.verify", description=__doc__.splitlines()[0])
    parser.add_argument("rpc_url", help="JSON-RPC URL of any node of the settlement chain")
    parser.add_argument("settlement", help="address of the Settlement contract")
    parser.add_argument("seq", type=int, help="batch sequence number")
    parser.add_argument("da_file", type=Path, help="the batch's DA copy (GET /api/v1/settlement/data/<hash>/)")
    parser.add_argument("--from-block", type=int, default=0, help="first block to search for events (deployment)")
    args = parser.parse_args(argv)
    if not Web3.is_address(args.settlement):
        parser.error(f"{args.settlement!r} is not an EVM address")
    try:
        data = args.da_file.read_bytes()
        w3 = Web3(provider_for(args.rpc_url))
        report = batch_verify(
            w3=w3, settlement_address=args.settlement, seq=args.seq, data=data, from_block=args.from_block
        )
    except (OSError, ChainConfigError, requests.RequestException) as error:
        print(f"verify: {error}", file=sys.stderr)
        return 2
    for fact in report.facts:
        print(f"ok: {fact}")
    for problem in report.problems:
        print(f"MISMATCH: {problem}")
    print("VERIFIED" if report.ok else "NOT VERIFIED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
