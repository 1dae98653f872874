"""Measure claim gas of Settlement and of its first version (SettlementV1) over the same accounts on one chain."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_utils import keccak as eth_keccak
from eth_utils import to_checksum_address
from web3 import Web3

from ledger.chain.artifacts import SETTLEMENT_CONTRACT, SETTLEMENT_V1_CONTRACT, SETTLEMENT_V2_CONTRACT, USDC_CONTRACT
from ledger.chain.client import contract_at, deploy, deploy_all, send
from ledger.merkle import StandardMerkleTree, keccak
from ledger.settlement import leaves as claim_leaves

LEAF_TYPES = claim_leaves.LEAF_TYPES
V2_LEAF_TYPES = ("uint256", "address", "address", "uint128")
V1_LEAF_TYPES = ("address", "address", "uint256")
SAMPLE_FRACTION = 0.01
AMOUNT = 7 * 10**6


@dataclass(frozen=True)
class ClaimGas:
    """Gas of one contract's claims at one tree size."""

    leaves: int
    depth: int
    first: int
    holder: int
    repeat: int
    second_in_slot: int | None
    mean_first: float
    max_first: int
    sampled: int
    # The most gas a sampled first claim took, per proof depth (a fresh account's claim into an untouched word).
    max_first_by_depth: dict[int, int] | None = None


class PaddedTree:
    """A tree of a few accounts made as deep as a large batch's: its root hashed up with random siblings.

    The contract only sees a leaf, its proof and a root, so a claim against it costs what a claim with a
    proof of the same depth costs in a real tree of ``2 ** depth`` leaves (the same calldata length, the
    same hashing, random sibling bytes alike), without building and posting that tree.
    """

    def __init__(self, tree: StandardMerkleTree, depth: int, rng: random.Random) -> None:
        self.tree = tree
        extra = depth - max(len(tree.get_proof(i)) for i in range(len(tree)))
        self.siblings = ["0x" + rng.randbytes(32).hex() for _ in range(max(extra, 0))]
        node = bytes.fromhex(tree.root[2:])
        for sibling in self.siblings:
            other = bytes.fromhex(sibling[2:])
            node = keccak(node + other if node <= other else other + node)
        self.root = "0x" + node.hex()

    def get_proof(self, index: int) -> list[str]:
        return self.tree.get_proof(index) + self.siblings


def recipient(label: str, size: int, index: int) -> str:
    """Return the fixed address of account ``index`` in a batch of ``size`` (fresh: holds nothing on chain)."""
    return to_checksum_address(eth_keccak(text=f"janction-gas:{label}:{size}:{index}")[:20])


def _web3_args(leaf: list) -> list:
    """Return a leaf's values as web3 takes them: addresses checksummed."""
    return [to_checksum_address(value) if isinstance(value, str) else value for value in leaf]


ALL = ("Settlement", "SettlementV2", "SettlementV1")
BOTH = ALL


def measure(
    w3: Web3,
    admin: LocalAccount,
    size: int,
    *,
    seed: int = 18,
    contracts: tuple[str, ...] = ALL,
    max_sample: int | None = None,
    depth: int | None = None,
) -> dict[str, ClaimGas]:
    """Post one batch of ``size`` USDC leaves to a fresh Settlement, SettlementV2 and SettlementV1; measure claims.

    first: a fresh recipient's first claim; holder: a first claim by an account already holding USDC;
    repeat: a second claim after a new batch raised the amount; second_in_slot: a first claim whose
    neighbouring index already claimed (Settlement and V2: a write into a non-zero word); mean_first/max_first:
    first claims of a random 1% of the accounts (at most ``max_sample``), in random order. With ``depth``, the
    tree of ``size`` accounts is padded to proofs of that depth (PaddedTree): the gas of a batch of about
    ``2 ** depth`` accounts at the cost of building ``size``.
    """
    addresses = deploy_all(w3, admin)
    usdc = contract_at(w3, USDC_CONTRACT, addresses.usdc)
    deployed = {"Settlement": contract_at(w3, SETTLEMENT_CONTRACT, addresses.settlement)}
    if "SettlementV2" in contracts:
        deployed["SettlementV2"] = deploy(
            w3, admin, SETTLEMENT_V2_CONTRACT, admin.address, admin.address, admin.address, addresses.jct, 0, 0, 0
        )
    if "SettlementV1" in contracts:
        v1 = deployed["SettlementV1"] = deploy(
            w3, admin, SETTLEMENT_V1_CONTRACT, admin.address, admin.address, addresses.jct, 0
        )
        send(w3, admin, v1.functions.setTokenAllowed(usdc.address, True))
    for contract in deployed.values():
        send(w3, admin, usdc.functions.mint(contract.address, 10 * AMOUNT * size))
    rng = random.Random(seed)
    sample_size = max(1, round(size * SAMPLE_FRACTION))
    sample = rng.sample(range(8, size), sample_size if max_sample is None else min(sample_size, max_sample))
    # The sample is claimed first, into untouched claim words. The single claims below then use two claim words
    # (of 128 indices) that no sampled index shares: `first`, `neighbour` and `repeat` in one, `holder` in another.
    first, holder = (128 * word for word in _free_words(size, sample)[:2])
    holder, neighbour, repeat = holder + 2, first + 1, first + 4
    results = {}
    for name in ALL:
        if name not in contracts:
            continue
        contract = deployed[name]
        # The same tree shape for each contract, but their own recipients: each first claim meets a fresh account.
        accounts = [recipient(name, size, index) for index in range(size)]
        send(w3, admin, usdc.functions.mint(accounts[holder], 1))
        padding = random.Random(seed + 1)  # the same siblings for every post
        leaves, tree = _post(
            w3, admin, name, contract, usdc.address, accounts, seq=1, raised=(), depth=depth, rng=padding
        )
        sampled = _claims(w3, admin, contract, tree, leaves, sample)
        by_depth: dict[int, int] = {}
        for index, gas_used in zip(sample, sampled, strict=True):
            proof_depth = len(tree.get_proof(index))
            by_depth[proof_depth] = max(gas_used, by_depth.get(proof_depth, 0))
        first_depth = len(tree.get_proof(first))
        gas = {
            label: _claim(w3, admin, contract, tree, leaves, i)
            for label, i in (("first", first), ("holder", holder), ("neighbour", neighbour), ("repeat", repeat))
        }
        # `first` and `neighbour` share a word (a slot of two in V2): `first` went first, so `neighbour` wrote into a
        # non-zero word.
        second_in_slot = gas["neighbour"] if name != "SettlementV1" else None
        padding = random.Random(seed + 1)
        leaves, tree = _post(
            w3,
            admin,
            name,
            contract,
            usdc.address,
            accounts,
            seq=2,
            raised=(repeat,),
            depth=depth,
            rng=padding,
            previous=leaves,
        )
        repeat_gas = _claim(w3, admin, contract, tree, leaves, repeat)
        results[name] = ClaimGas(
            leaves=size,
            depth=first_depth,
            first=gas["first"],
            holder=gas["holder"],
            repeat=repeat_gas,
            second_in_slot=second_in_slot,
            mean_first=statistics.fmean(sampled),
            max_first=max(sampled),
            max_first_by_depth=dict(sorted(by_depth.items())),
            sampled=len(sampled),
        )
    return results


def _free_words(size: int, sample: list[int]) -> list[int]:
    """Return the claim words (128 indices each, the first 8 indices left out) that no sampled index falls in."""
    used = {index // 128 for index in sample}
    free = [word for word in range((size + 127) // 128) if word not in used and 128 * word + 8 <= size]
    if len(free) < 2:
        raise ValueError(f"{size} leaves: fewer than two claim words without a sampled index")
    return free


def build_leaves(contract, token: str, accounts: list[str], amounts: list[int], seq: int, previous=None) -> list:
    """Return Settlement's packed leaves of batch ``seq`` built from the claim bits on chain now (as the platform does).

    ``previous`` is the previous batch's packed leaves (index = position); batch 1 has parity 0, batch 2 parity 1.
    """
    words = contract.functions.claimWords(claim_leaves.word_slots(range(len(accounts)))).call()
    bits = dict(zip(claim_leaves.word_slots(range(len(accounts))), words, strict=True))
    parity = (seq - 1) % 2
    leaves = []
    for index, account in enumerate(accounts):
        leaf = claim_leaves.next_leaf(
            index=index,
            token=token,
            account=account,
            cumulative=amounts[index],
            parity=parity,
            bits_now=claim_leaves.bits_of(bits, index),
            previous_leaf=None if previous is None else claim_leaves.unpack(previous[index]),
        )
        leaves.append(list(leaf.words()))
    return leaves


def _post(w3, admin, name, contract, token, accounts, *, seq, raised, depth=None, rng=None, previous=None):
    amounts = [AMOUNT * (2 if index in raised else 1) + index for index in range(len(accounts))]
    if name == "Settlement":
        leaves = build_leaves(contract, token, accounts, amounts, seq, previous)
        tree = StandardMerkleTree.of(leaves, LEAF_TYPES)
    elif name == "SettlementV2":
        leaves = [[index, token, account, amounts[index]] for index, account in enumerate(accounts)]
        tree = StandardMerkleTree.of(leaves, V2_LEAF_TYPES)
    else:
        leaves = [[token, account, amounts[index]] for index, account in enumerate(accounts)]
        tree = StandardMerkleTree.of(leaves, V1_LEAF_TYPES)
    if depth is not None:
        tree = PaddedTree(tree, depth, rng)
    if name == "SettlementV1":
        send(w3, admin, contract.functions.postBatch(seq, tree.root, b"\x00" * 32))
    else:
        send(w3, admin, contract.functions.postBatch(seq, tree.root, b"\x00" * 32, 0))
    return leaves, tree


def _claim(w3, admin, contract, tree, leaves, index) -> int:
    return send(w3, admin, contract.functions.claim(*_web3_args(leaves[index]), tree.get_proof(index)))["gasUsed"]


def _claims(w3, admin, contract, tree, leaves, indices) -> list[int]:
    """Send the claims of ``indices`` back to back (fixed gas limit and fees: no estimate) and return their gas."""
    nonce = w3.eth.get_transaction_count(admin.address, "pending")
    fee = 2 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9
    params = {
        "from": admin.address,
        "gas": 300_000,
        "maxFeePerGas": fee,
        "maxPriorityFeePerGas": 10**9,
        "chainId": w3.eth.chain_id,
    }
    hashes = []
    for offset, index in enumerate(indices):
        call = contract.functions.claim(*_web3_args(leaves[index]), tree.get_proof(index))
        signed = admin.sign_transaction(call.build_transaction({**params, "nonce": nonce + offset}))
        hashes.append(w3.eth.send_raw_transaction(signed.raw_transaction))
    receipts = [w3.eth.wait_for_transaction_receipt(tx_hash) for tx_hash in hashes]
    assert all(receipt["status"] == 1 for receipt in receipts), "a sampled claim reverted"
    return [receipt["gasUsed"] for receipt in receipts]
