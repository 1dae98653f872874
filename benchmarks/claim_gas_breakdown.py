"""Where a Settlement claim's gas goes: an opcode trace of fresh, holder and repeat claims on Hardhat, by component.

Run: .venv/bin/python -m benchmarks.claim_gas_breakdown [leaves]   (default 100,000; needs node_modules)

Posts one batch of ``leaves`` USDC leaves (the claim-gas benchmark's tree) to a fresh Settlement, claims a
fresh recipient's leaf, a token holder's leaf, a neighbour in the same claimed slot and, after a second
batch, a repeat claim, and splits each transaction's gas (``debug_traceTransaction``) into: the 21,000 base,
calldata (4 per zero byte, 16 per non-zero byte: the proof's share apart), Settlement's storage reads and
writes, its hashing, the token call (its cold account access, its storage, its Transfer event, the rest of
its code) and everything else Settlement executes. The figures are the floor argument in docs/settlement.md.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from benchmarks.settlement_bench import hardhat

TX_BASE = 21_000


def main() -> None:
    from eth_utils import keccak, to_checksum_address

    from ledger.chain.artifacts import SETTLEMENT_CONTRACT, USDC_CONTRACT
    from ledger.chain.client import contract_at, deploy_all, send
    from ledger.merkle import StandardMerkleTree
    from ledger.settlement.leaves import LEAF_TYPES
    from tests.contracts.claim_gas import build_leaves
    from tests.contracts.conftest import funded_account

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    amount = 7 * 10**6
    with hardhat() as w3:
        admin = funded_account(w3, "breakdown")
        addresses = deploy_all(w3, admin)
        settlement = contract_at(w3, SETTLEMENT_CONTRACT, addresses.settlement)
        usdc = contract_at(w3, USDC_CONTRACT, addresses.usdc)
        send(w3, admin, usdc.functions.mint(settlement.address, 10 * amount * size))
        accounts = [to_checksum_address(keccak(text=f"breakdown:{size}:{i}")[:20]) for i in range(size)]
        holder = 130  # in another claim word than 0, 1 and 4
        send(w3, admin, usdc.functions.mint(accounts[holder], 1))
        previous = None

        def post(seq: int, raised: tuple[int, ...]):
            nonlocal previous
            amounts = [amount * (2 if i in raised else 1) + i for i in range(size)]
            leaves = build_leaves(settlement, usdc.address, accounts, amounts, seq, previous)
            previous = leaves
            tree = StandardMerkleTree.of(leaves, LEAF_TYPES)
            send(w3, admin, settlement.functions.postBatch(seq, tree.root, b"\x00" * 32, 0))
            return leaves, tree

        leaves, tree = post(1, ())
        rows = []
        for label, index in (("fresh", 0), ("neighbour", 1), ("holder", holder), ("first of 4", 4)):
            receipt = send(w3, admin, settlement.functions.claim(*leaves[index], tree.get_proof(index)))
            rows.append((label, len(tree.get_proof(index)), receipt))
        leaves, tree = post(2, (4,))
        receipt = send(w3, admin, settlement.functions.claim(*leaves[4], tree.get_proof(4)))
        rows.append(("repeat", len(tree.get_proof(4)), receipt))
        print(f"Claim gas by component at {size:,} leaves (Settlement, Hardhat opcode trace)")
        for label, depth, receipt in rows:
            parts = breakdown(w3, receipt, depth)
            total = sum(parts.values())
            assert total == receipt["gasUsed"], (total, receipt["gasUsed"], parts)
            print(f"  {label} claim, proof depth {depth}: {receipt['gasUsed']:,} gas")
            for name, gas in parts.items():
                print(f"    {name:<44} {gas:>7,}")


def breakdown(w3, receipt, depth: int) -> dict[str, int]:
    """Split the gas of one claim transaction into components, from its opcode trace."""
    tx = w3.eth.get_transaction(receipt["transactionHash"])
    data = bytes(tx["input"])
    proof_bytes = data[-32 * depth :]
    proof_gas = sum(16 if byte else 4 for byte in proof_bytes)
    calldata_gas = sum(16 if byte else 4 for byte in data)
    trace = w3.provider.make_request(
        "debug_traceTransaction",
        [receipt["transactionHash"].to_0x_hex(), {"disableMemory": True, "disableStorage": True}],
    )["result"]
    logs = trace["structLogs"]
    parts: dict[str, int] = defaultdict(int)
    parts["transaction base"] = TX_BASE
    parts["calldata: proof"] = proof_gas
    parts["calldata: the three leaf words, ABI"] = calldata_gas - proof_gas
    for position, step in enumerate(logs):
        op, cost, depth_now = step["op"], step["gasCost"], step["depth"]
        where = "Settlement" if depth_now == 1 else "token"
        if op in ("CALL", "STATICCALL") and depth_now == 1:
            # gasCost of a call includes the gas it forwards; charge only what the caller keeps: gas before the
            # call minus gas after it returns, minus what the callee spent.
            after = next(s for s in logs[position + 1 :] if s["depth"] == 1)
            child = [s for s in logs[position + 1 : logs.index(after)] if s["depth"] == 2]
            child_used = child[0]["gas"] - child[-1]["gas"] + child[-1]["gasCost"] if child else 0
            parts[f"token call: {op} (cold account, value)"] += step["gas"] - after["gas"] - child_used
        elif op == "SLOAD":
            parts[f"{where}: SLOAD"] += cost
        elif op == "SSTORE":
            parts[f"{where}: SSTORE"] += cost
        elif op == "KECCAK256" and depth_now == 1:
            parts["Settlement: KECCAK256 (leaf + proof)"] += cost
        elif op.startswith("LOG"):
            parts[f"{where}: {op} (event)"] += cost
        else:
            parts[f"{where}: other opcodes"] += cost
    refund = sum(parts.values()) - receipt["gasUsed"]
    if refund:
        parts["refund"] = -refund
    return dict(parts)


if __name__ == "__main__":
    main()
