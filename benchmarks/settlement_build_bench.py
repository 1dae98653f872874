"""100,000 accounts settled from ledger rows, every proof included: the current path against the old one.

Run: DATABASE_URL=postgres://... .venv/bin/python -m benchmarks.settlement_build_bench [accounts] [repeats]

Creates a throwaway PostgreSQL database with ``accounts`` (default 100,000) users, each with a wallet and one
USDC credit to its earnings, then times, alternately and each inside a transaction that is rolled back:

- new: ``settlement_batch_prepare`` (cumulative sums, payout allocations, tree, DA copy, the tree kept for
  the proof endpoint) and then every account's proof from the endpoint's cache (``ledger.settlement.trees``);
- old: the same two steps with the code of commit ``OLD_COMMIT`` (loaded from git into this process): its
  ``settlement_batch_prepare`` with its Merkle module (pycryptodome's Keccak, eth_utils checksums) and every
  proof from a tree rebuilt from the stored DA copy, as the proof endpoint did on its first request.

Prints the medians, the ratio old / new, and checks that both paths publish the same amounts (the leaves'
token, account and amount: since Settlement version 3 the new path's leaves are packed with claim state). The goal
(issue 18, item 5): the new path under 5 s at 100,000 accounts on this machine.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import subprocess
import sys
import time
import types

from benchmarks._django import ROOT, setup_bench_database

OLD_COMMIT = "640eef5"
GOAL_SECONDS = 5.0


def _old_module(name: str, path: str, **inject):
    """Load ``path`` as it was at OLD_COMMIT into a fresh module ``name``, with ``inject`` set before it runs."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    module = types.ModuleType(name)
    module.__dict__.update(inject)
    sys.modules[name] = module  # dataclasses look their module up there
    for line in ("from marketplace.models import Wallet",):  # Wallet may have moved since (issue 10)
        source = source.replace(line + "\n", "")
    exec(compile(source, f"{OLD_COMMIT}:{path}", "exec"), module.__dict__)  # noqa: S102 - our own code at a commit
    return module


def _shape(leaves: list[list[object]]) -> str:
    """Return a digest of ``leaves`` in index order without their index (packed: their token, account, amount)."""
    if leaves and len(leaves[0]) == 3:  # DA version 4: three packed words
        from ledger.merkle import checksum_address
        from ledger.settlement.leaves import unpack

        fields = [unpack(leaf) for leaf in leaves]
        leaves = [
            [leaf.index, checksum_address(leaf.token), checksum_address(leaf.account), str(leaf.cumulative)]
            for leaf in fields
        ]
    ordered = sorted(leaves, key=lambda leaf: int(leaf[0]))
    return hashlib.sha256(json.dumps([leaf[1:] for leaf in ordered]).encode()).hexdigest()


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    teardown = setup_bench_database("janction_settlement_build_bench")
    try:
        run(accounts, repeats)
    finally:
        teardown()


def run(accounts: int, repeats: int) -> None:
    from django.db import transaction

    import ledger.settlement.batches as new_batches
    from benchmarks.settlement_bench import _populate
    from ledger.settlement.trees import tree_forget_all, tree_get

    old_merkle = _old_module("old_merkle", "ledger/merkle.py")
    old_commitments = _old_module("old_commitments", "ledger/settlement/commitments.py")
    old_batches = _old_module("old_batches", "ledger/settlement/batches.py", Wallet=new_batches.Wallet)
    old_batches.StandardMerkleTree = old_merkle.StandardMerkleTree
    old_batches.batch_commitments = old_commitments.batch_commitments

    started = time.perf_counter()
    _populate(0, accounts)
    print(
        f"{accounts:,} accounts with a wallet and one USDC credit each: "
        f"ledger rows in {time.perf_counter() - started:.1f} s"
    )

    def new_path() -> tuple[float, float, str]:
        tree_forget_all()
        start = time.perf_counter()
        batch = new_batches.settlement_batch_prepare()
        prepared = time.perf_counter()
        cached = tree_get(sha256=batch.data_id)
        proofs = [cached.tree.get_proof(position) for position in range(len(cached.tree))]
        done = time.perf_counter()
        assert len(proofs) == batch.leaf_count == accounts and cached.tree.root == batch.root
        return prepared - start, done - prepared, _shape(cached.content["leaves"])

    def old_path() -> tuple[float, float, str]:
        start = time.perf_counter()
        batch = old_batches.settlement_batch_prepare()
        prepared = time.perf_counter()
        content = json.loads(batch.data.content)
        tree = old_merkle.StandardMerkleTree.of(content["leaves"], content["leaf_types"])
        proofs = [tree.get_proof(position) for position in range(len(tree))]
        done = time.perf_counter()
        assert len(proofs) == batch.leaf_count == accounts and tree.root == batch.root
        return prepared - start, done - prepared, _shape(content["leaves"])

    class _Rollback(Exception):
        pass

    def timed(path) -> tuple[float, float, str]:
        try:
            with transaction.atomic():
                result = path()
                raise _Rollback
        except _Rollback:
            return result

    results: dict[str, list[tuple[float, float, str]]] = {"old": [], "new": []}
    for repeat in range(repeats):
        for label, path in (
            (("new", new_path), ("old", old_path)) if repeat % 2 else (("old", old_path), ("new", new_path))
        ):
            results[label].append(timed(path))
            prepare_s, proofs_s, _ = results[label][-1]
            print(f"  run {repeat + 1} {label}: prepare {prepare_s:5.2f} s + every proof {proofs_s:5.2f} s", flush=True)
    # Allocation ids (the leaf index) differ between runs (a rolled-back sequence still advances): compare the rest.
    shapes = {shape for runs in results.values() for _, _, shape in runs}
    medians = {}
    for label, runs in results.items():
        prepare = statistics.median(run[0] for run in runs)
        proofs = statistics.median(run[1] for run in runs)
        total = statistics.median(run[0] + run[1] for run in runs)
        medians[label] = total
        print(
            f"{label}: {accounts:,} accounts from ledger rows incl. every proof: median {total:5.2f} s "
            f"(prepare {prepare:5.2f} s, every proof {proofs:5.2f} s; {len(runs)} runs)"
        )
    print(
        f"old / new: {medians['old'] / medians['new']:.2f}x; same leaves from both paths: {len(shapes) == 1}"
        + (
            f"; goal < {GOAL_SECONDS:.0f} s at 100,000: {'met' if medians['new'] < GOAL_SECONDS else 'NOT met'}"
            if accounts == 100_000
            else ""
        )
    )


if __name__ == "__main__":
    main()
