"""Check a posted settlement batch against its DA file, using only the chain and the file (no Janction API).

Usage: python -m ledger.settlement.verify <rpc-url> <settlement-address> <seq> <da-file> [--previous FILE]
       [--from-block N]

Reads batch ``seq``'s `BatchPosted` event (root and data hash) from the chain, checks that the file's
SHA-256 is that data hash, rebuilds the Merkle tree from the file's leaves and checks that it gives the
posted root. Also says whether the batch is claimable, still inside its delay, or was rejected by the
guardian. For the two-bit claim leaves (DA version 4) it checks what the guardian must check before the
root activates: the state block was confirmed and the previous root was the claimable one there (the
schedule condition), every leaf's parity and claim bits match the chain at that block, and, given the
previous root's DA copy (``--previous``), every leaf's `previous` and `paid_before` follow from it and those
bits (a first root of a contract: `paid_before` equals what the old contract named in `carried_from` says
was claimed). Exit status: 0 verified, 1 the batch does not match (or is not on chain), 2 bad arguments or an
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
from ledger.settlement import leaves as claim_leaves

# DA versions whose leaves this command can rebuild (4: packed two-bit claim leaves for Settlement v3).
SUPPORTED_VERSIONS = (4,)
# What Settlement.claim hashes: a root over any other encoding would verify here but pay nobody on chain.
CONTRACT_LEAF_TYPES = list(claim_leaves.LEAF_TYPES)
# Claim-bit words read per eth_call.
_WORDS_PER_CALL = 2_000


@dataclass
class Report:
    """What the verification found: facts that held, and problems."""

    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def batch_verify(
    *,
    w3: Web3,
    settlement_address: str,
    seq: int,
    data: bytes,
    from_block: int = 0,
    previous: bytes | None = None,
    confirmations: int = 2,
) -> Report:
    """Check batch ``seq`` on chain against the DA file ``data`` (and the previous root's, ``previous``)."""
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
    _check_claim_state(report, settlement, content, event["blockNumber"], previous, confirmations)
    report.facts.append(_status(settlement, seq, from_block))
    return report


def _check_claim_state(
    report: Report, settlement, content: dict, posted_block: int, previous: bytes | None, confirmations: int
) -> None:
    """Check the leaves' claim state against the chain at the DA copy's state block (what the guardian checks)."""
    state_block, parity = content.get("state_block"), content.get("parity")
    if not isinstance(state_block, int) or parity not in (0, 1):
        report.problems.append("the file has no state_block / parity")
        return
    if state_block + confirmations > posted_block:
        report.problems.append(
            f"state block {state_block} has fewer than {confirmations} blocks on top when the batch was posted "
            f"in block {posted_block}"
        )
    functions = settlement.functions
    active = functions.activeSeq().call(block_identifier=state_block)
    pending = functions.pendingSeq().call(block_identifier=state_block)
    previous_seq = content.get("previous_seq")
    if previous_seq is None and active != 0:
        report.problems.append(
            f"the file builds on no earlier root, but batch {active} was claimable at state block {state_block}: "
            "what was claimed against it would be paid again"
        )
    if previous_seq is not None and (active != previous_seq or pending != 0):
        report.problems.append(
            f"at state block {state_block} batch {previous_seq} was not the claimable root (active {active}, "
            f"pending {pending}): the schedule condition does not hold"
        )
    leaves = [claim_leaves.unpack(leaf) for leaf in content["leaves"]]
    slots = claim_leaves.word_slots(leaf.index for leaf in leaves)
    words: dict[int, int] = {}
    for start in range(0, len(slots), _WORDS_PER_CALL):
        chunk = slots[start : start + _WORDS_PER_CALL]
        words.update(zip(chunk, functions.claimWords(chunk).call(block_identifier=state_block), strict=True))
    wrong_bits = [leaf.index for leaf in leaves if leaf.bits != claim_leaves.bits_of(words, leaf.index)]
    wrong_parity = [leaf.index for leaf in leaves if leaf.parity != parity]
    if wrong_bits:
        report.problems.append(f"{len(wrong_bits)} leaves' claim bits differ from the chain's, e.g. {wrong_bits[:5]}")
    if wrong_parity:
        report.problems.append(f"{len(wrong_parity)} leaves do not have the batch's parity, e.g. {wrong_parity[:5]}")
    if not wrong_bits and not wrong_parity:
        report.facts.append(f"every leaf's parity and claim bits match the chain at state block {state_block}")
    if previous_seq is None:
        _check_first_root(report, settlement, content, leaves)
        return
    if previous is None:
        report.facts.append("previous and paid_before amounts not checked (give --previous with the previous DA copy)")
        return
    posted = settlement.events.BatchPosted().get_logs(
        argument_filters={"seq": previous_seq}, from_block=0, to_block=state_block
    )
    previous_hash = "0x" + hashlib.sha256(previous).hexdigest()
    if not posted or HexBytes(posted[-1]["args"]["dataHash"]).to_0x_hex() != previous_hash:
        report.problems.append(f"--previous is not the DA copy posted for batch {previous_seq} (its SHA-256 differs)")
        return
    try:
        before = json.loads(previous)
        assert before["seq"] == previous_seq and before.get("version") in SUPPORTED_VERSIONS
        before_leaves = {leaf.index: leaf for leaf in map(claim_leaves.unpack, before["leaves"])}
        before_parity = before["parity"]
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        report.problems.append(f"--previous is not the DA copy of batch {previous_seq}: {error!r}")
        return
    if before_parity == parity:
        report.problems.append(f"batch {previous_seq} has the same parity {parity} as this one")
    wrong = []
    for leaf in leaves:
        earlier = before_leaves.get(leaf.index)
        expected = (0, 0) if earlier is None else (earlier.cumulative, earlier.paid(leaf.bits))
        if earlier is not None and (earlier.token, earlier.account) != (leaf.token, leaf.account):
            wrong.append(leaf.index)
        elif (leaf.previous, leaf.paid_before) != expected or leaf.cumulative < max(leaf.previous, leaf.paid_before):
            wrong.append(leaf.index)
    missing = sorted(set(before_leaves) - {leaf.index for leaf in leaves})
    if missing:
        report.problems.append(f"{len(missing)} allocations of batch {previous_seq} are missing, e.g. {missing[:5]}")
    if wrong:
        report.problems.append(
            f"{len(wrong)} leaves' previous / paid_before amounts do not follow from batch {previous_seq} and the "
            f"claim bits, e.g. {wrong[:5]}"
        )
    else:
        report.facts.append(f"every leaf's previous and paid_before amounts follow from batch {previous_seq}")


def _check_first_root(report: Report, settlement, content: dict, leaves: list) -> None:
    """A contract's first root: nothing before it, and paid_before is what the old contract (if any) says."""
    carried_from = content.get("carried_from")
    if any(leaf.previous for leaf in leaves):
        report.problems.append("a first root with non-zero previous amounts")
    if not carried_from:
        if any(leaf.paid_before for leaf in leaves):
            report.problems.append("a first root without carried_from has non-zero paid_before amounts")
        else:
            report.facts.append("the contract's first root: nothing paid before")
        return
    from ledger.chain.artifacts import SETTLEMENT_V1_CONTRACT, SETTLEMENT_V2_CONTRACT
    from ledger.settlement.migration import MigrationError, claimed_on

    w3 = settlement.w3
    try:
        carried = claimed_on(
            contract_at(w3, SETTLEMENT_V2_CONTRACT, carried_from),
            contract_at(w3, SETTLEMENT_V1_CONTRACT, carried_from),
            [
                (leaf.index, Web3.to_checksum_address(leaf.token), Web3.to_checksum_address(leaf.account))
                for leaf in leaves
            ],
        )
    except MigrationError as error:
        report.problems.append(str(error))
        return
    wrong = [leaf.index for leaf in leaves if leaf.paid_before != carried.get(leaf.index, 0)]
    if wrong:
        report.problems.append(
            f"{len(wrong)} paid_before amounts differ from {carried_from}'s claimed, e.g. {wrong[:5]}"
        )
    else:
        report.facts.append(f"every paid_before equals what {carried_from} says was claimed")


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
    parser.add_argument("--previous", type=Path, help="the previous root's DA copy (checks previous and paid_before)")
    parser.add_argument("--confirmations", type=int, default=2, help="blocks the state block needs on top")
    args = parser.parse_args(argv)
    if not Web3.is_address(args.settlement):
        parser.error(f"{args.settlement!r} is not an EVM address")
    try:
        data = args.da_file.read_bytes()
        previous = args.previous.read_bytes() if args.previous else None
        w3 = Web3(provider_for(args.rpc_url))
        report = batch_verify(
            w3=w3,
            settlement_address=args.settlement,
            seq=args.seq,
            data=data,
            from_block=args.from_block,
            previous=previous,
            confirmations=args.confirmations,
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
