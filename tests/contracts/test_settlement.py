"""Settlement.sol on a Hardhat node: delayed batches, two-bit cumulative claims, deposits, staking, pause, migration."""

import random

import pytest
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from ledger.chain.artifacts import JCT_CONTRACT, SETTLEMENT_CONTRACT, SETTLEMENT_V1_CONTRACT, SETTLEMENT_V2_CONTRACT
from ledger.chain.client import contract_at, deploy
from ledger.merkle import StandardMerkleTree
from ledger.settlement import leaves as claim_leaves
from ledger.settlement.migration import MigrationError, claimed_on

LEAF_TYPES = list(claim_leaves.LEAF_TYPES)
ROOT_A = b"\xaa" * 32
ROOT_B = b"\xbb" * 32
DATA_HASH = b"\xdd" * 32
USDC = 10**6
JCT = 10**18
DELAY = 3600


# Settlement address -> seq -> {index: ClaimLeaf} of every tree posted with post_tree.
_POSTED: dict[str, dict[int, dict[int, claim_leaves.ClaimLeaf]]] = {}


def build_leaves(chain, leaves, *, settlement=None, carried=None):
    """Return the packed leaves of ``leaves`` ([index, token, account, cumulative]) built as the platform builds them.

    From the claim bits on chain now and the leaves of the root claimable now (ledger/settlement/batches.py).
    """
    settlement = settlement or chain.settlement
    posted = _POSTED.setdefault(settlement.address, {})
    standing = posted.get(settlement.functions.activeSeq().call())
    parity = 0 if standing is None else 1 - next(iter(standing.values())).parity
    slots = claim_leaves.word_slots(leaf[0] for leaf in leaves)
    words = dict(zip(slots, settlement.functions.claimWords(slots).call(), strict=True))
    return [
        claim_leaves.next_leaf(
            index=index,
            token=token,
            account=account,
            cumulative=cumulative,
            parity=parity,
            bits_now=claim_leaves.bits_of(words, index),
            previous_leaf=None if standing is None else standing.get(index),
            carried=(carried or {}).get(index, 0),
        )
        for index, token, account, cumulative in leaves
    ]


@pytest.fixture(autouse=True)
def _forget_posted_trees():
    """Every test starts from the fresh contracts (conftest's chain snapshot), so from no posted tree."""
    _POSTED.clear()
    yield
    _POSTED.clear()


def post_tree(chain, seq, leaves, *, jct_rewards=0, settlement=None, carried=None):
    """Post the tree over ``leaves`` ([index, token, account, cumulative]) as batch ``seq`` and return it."""
    settlement = settlement or chain.settlement
    built = build_leaves(chain, leaves, settlement=settlement, carried=carried)
    tree = StandardMerkleTree.of([leaf.words() for leaf in built], LEAF_TYPES)
    chain.send(chain.operator, settlement.functions.postBatch(seq, tree.root, DATA_HASH, jct_rewards))
    _POSTED[settlement.address][seq] = {leaf.index: leaf for leaf in built}
    return tree


def claim_call(chain, tree, index, *, settlement=None):
    """Build the claim of leaf ``index`` of ``tree`` with its proof."""
    return (settlement or chain.settlement).functions.claim(*tree.values[index], tree.get_proof(index))


def event_args(contract, event_name, receipt):
    """Return the arguments of every ``event_name`` that ``contract`` emitted in ``receipt``."""
    events = getattr(contract.events, event_name)().process_receipt(receipt, errors=DISCARD)
    return [dict(event["args"]) for event in events if event["address"] == contract.address]


def balance(token, account):
    return token.functions.balanceOf(account).call()


def claimed(chain, index, *, settlement=None):
    """Return what ``index`` has been paid as the claimable root's leaf sees it (0 without a leaf)."""
    settlement = settlement or chain.settlement
    leaf = _POSTED.get(settlement.address, {}).get(settlement.functions.activeSeq().call(), {}).get(index)
    return 0 if leaf is None else settlement.functions.paidOf(*leaf.words()).call()


def test_operator_posts_batches_in_sequence(chain):
    settlement = chain.settlement

    receipt = chain.send(chain.operator, settlement.functions.postBatch(1, ROOT_A, DATA_HASH, 0))
    chain.send(chain.operator, settlement.functions.postBatch(2, ROOT_B, DATA_HASH, 0))

    assert event_args(settlement, "BatchPosted", receipt) == [{"seq": 1, "root": ROOT_A, "dataHash": DATA_HASH}]
    assert event_args(settlement, "BatchActivated", receipt) == [{"seq": 1, "root": ROOT_A}]
    assert settlement.functions.lastSeq().call() == 2
    assert settlement.functions.root().call() == ROOT_B
    assert settlement.functions.claimRoot().call() == ROOT_B


def test_only_the_operator_posts_batches(chain):
    operator_role = chain.settlement.functions.OPERATOR_ROLE().call()

    for sender in (chain.admin, chain.outsider):
        chain.assert_reverts(
            sender,
            chain.settlement.functions.postBatch(1, ROOT_A, DATA_HASH, 0),
            "AccessControlUnauthorizedAccount",
            sender.address,
            operator_role,
        )
    assert chain.settlement.functions.lastSeq().call() == 0


def test_batches_out_of_sequence_revert(chain):
    post_batch = chain.settlement.functions.postBatch

    chain.assert_reverts(chain.operator, post_batch(0, ROOT_A, DATA_HASH, 0), "InvalidSequence", 1, 0)
    chain.assert_reverts(chain.operator, post_batch(2, ROOT_A, DATA_HASH, 0), "InvalidSequence", 1, 2)
    chain.send(chain.operator, post_batch(1, ROOT_A, DATA_HASH, 0))
    chain.assert_reverts(chain.operator, post_batch(1, ROOT_B, DATA_HASH, 0), "InvalidSequence", 2, 1)
    chain.assert_reverts(chain.operator, post_batch(3, ROOT_B, DATA_HASH, 0), "InvalidSequence", 2, 3)
    assert chain.settlement.functions.root().call() == ROOT_A


def test_claims_pay_each_account_its_cumulative_amount(chain):
    usdc, jct, settlement = chain.usdc, chain.jct, chain.settlement
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    chain.mint(jct, settlement.address, 100 * JCT)
    leaves = [
        [0, usdc.address, chain.alice.address, 150 * USDC + 1],
        [1, usdc.address, chain.bob.address, 25 * USDC],
        [2, jct.address, chain.alice.address, 3 * JCT],
        [5, jct.address, chain.carol.address, 7 * JCT + 5],
    ]
    tree = post_tree(chain, 1, leaves)

    for index, (_, token, account, cumulative) in enumerate(leaves):
        receipt = chain.send(chain.outsider, claim_call(chain, tree, index))
        contract = usdc if token == usdc.address else jct
        # The claim's record is the token's Transfer out of the contract; Settlement logs nothing of its own.
        assert event_args(contract, "Transfer", receipt) == [
            {"from": settlement.address, "to": account, "value": cumulative}
        ]
        assert [log for log in receipt["logs"] if log["address"] == settlement.address] == []

    assert balance(usdc, chain.alice.address) == 150 * USDC + 1
    assert balance(usdc, chain.bob.address) == 25 * USDC
    assert balance(jct, chain.alice.address) == 3 * JCT
    assert balance(jct, chain.carol.address) == 7 * JCT + 5
    assert balance(usdc, settlement.address) == 1_000 * USDC - 175 * USDC - 1
    assert [claimed(chain, index) for index in range(6)] == [150 * USDC + 1, 25 * USDC, 3 * JCT, 0, 0, 7 * JCT + 5]


def test_a_larger_cumulative_amount_in_a_later_batch_pays_only_the_difference(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    first = post_tree(chain, 1, [[0, usdc.address, alice, 40 * USDC], [1, usdc.address, bob, 10 * USDC]])
    chain.send(chain.alice, claim_call(chain, first, 0))
    second = post_tree(chain, 2, [[0, usdc.address, alice, 65 * USDC], [1, usdc.address, bob, 30 * USDC]])

    receipt = chain.send(chain.alice, claim_call(chain, second, 0))
    chain.send(chain.bob, claim_call(chain, second, 1))

    assert event_args(usdc, "Transfer", receipt)[0]["value"] == 25 * USDC
    assert balance(usdc, alice) == 65 * USDC
    assert balance(usdc, bob) == 30 * USDC
    assert (claimed(chain, 0), claimed(chain, 1)) == (65 * USDC, 30 * USDC)


def test_replaying_a_claim_reverts_and_pays_nothing(chain):
    usdc, settlement = chain.usdc, chain.settlement
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    tree = post_tree(
        chain, 1, [[0, usdc.address, chain.alice.address, 40 * USDC], [1, usdc.address, chain.bob.address, 1]]
    )
    chain.send(chain.alice, claim_call(chain, tree, 0))

    chain.assert_reverts(chain.alice, claim_call(chain, tree, 0), "AlreadyClaimed", 0)
    assert balance(usdc, chain.alice.address) == 40 * USDC


def test_claims_with_a_wrong_proof_amount_index_token_or_account_revert(chain):
    usdc, jct, settlement = chain.usdc, chain.jct, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    chain.mint(jct, settlement.address, 1_000 * JCT)
    tree = post_tree(chain, 1, [[0, usdc.address, alice, 40 * USDC], [1, usdc.address, bob, 10 * USDC]])
    claim = settlement.functions.claim
    key, token_amount, account_previous = tree.values[0]
    proof = tree.get_proof(0)
    usdc_word, jct_word = int(usdc.address, 16), int(jct.address, 16)

    for call in (
        claim(key, token_amount, account_previous, tree.get_proof(1)),
        claim(key, token_amount + (1 << 160), account_previous, proof),  # a larger amount
        claim(key + 1, token_amount, account_previous, proof),  # another allocation's index
        claim(key, token_amount - usdc_word + jct_word, account_previous, proof),  # another token
        claim(key, token_amount, int(bob, 16), proof),  # another account
        claim(key + (1 << 160), token_amount, account_previous, proof),  # a larger paid_before
        claim(key ^ (1 << 64), token_amount, account_previous, proof),  # other claim bits
        claim(key ^ (1 << 66), token_amount, account_previous, proof),  # the other parity
        claim(key, token_amount, account_previous + (1 << 160), proof),  # another previous amount
        claim(key, token_amount, account_previous, []),
    ):
        chain.assert_reverts(chain.alice, call, "InvalidProof")
    assert balance(usdc, alice) == balance(jct, alice) == balance(usdc, bob) == 0


def test_anyone_may_submit_a_claim_but_it_pays_the_leafs_account(chain):
    usdc = chain.usdc
    chain.mint(usdc, chain.settlement.address, 100 * USDC)
    tree = post_tree(
        chain, 1, [[0, usdc.address, chain.alice.address, 4 * USDC], [1, usdc.address, chain.bob.address, 1]]
    )

    chain.send(chain.bob, claim_call(chain, tree, 0))

    assert balance(usdc, chain.alice.address) == 4 * USDC
    assert balance(usdc, chain.bob.address) == 0


def test_a_claim_beyond_what_the_contract_holds_reverts_and_records_nothing(chain):
    usdc = chain.usdc
    chain.mint(usdc, chain.settlement.address, 3 * USDC)
    tree = post_tree(
        chain, 1, [[0, usdc.address, chain.alice.address, 4 * USDC], [1, usdc.address, chain.bob.address, 1]]
    )

    chain.assert_reverts(
        chain.alice,
        claim_call(chain, tree, 0),
        "ERC20InsufficientBalance",
        chain.settlement.address,
        3 * USDC,
        4 * USDC,
    )
    assert claimed(chain, 0) == 0


def test_proofs_for_an_earlier_batch_stop_working_once_a_new_root_is_active(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    first = post_tree(chain, 1, [[0, usdc.address, alice, 40 * USDC], [1, usdc.address, bob, 10 * USDC]])
    post_tree(chain, 2, [[0, usdc.address, alice, 45 * USDC], [1, usdc.address, bob, 10 * USDC]])

    chain.assert_reverts(chain.alice, claim_call(chain, first, 0), "InvalidProof")


def test_claim_many_pays_usdc_and_jct_in_one_transaction(chain):
    usdc, jct, settlement = chain.usdc, chain.jct, chain.settlement
    alice = chain.alice.address
    chain.mint(usdc, settlement.address, 10 * USDC)
    leaves = [[0, usdc.address, alice, 6 * USDC], [1, jct.address, alice, 2 * JCT]]
    tree = post_tree(chain, 1, leaves, jct_rewards=2 * JCT)

    bad = [(*tree.values[0], tree.get_proof(0)), (*tree.values[1], tree.get_proof(0))]
    chain.assert_reverts(chain.alice, settlement.functions.claimMany(bad), "InvalidProof")  # all or nothing
    assert balance(usdc, alice) == 0
    twice = [(*tree.values[0], tree.get_proof(0))] * 2
    chain.assert_reverts(chain.alice, settlement.functions.claimMany(twice), "AlreadyClaimed", 0)

    receipt = chain.send(
        chain.alice, settlement.functions.claimMany([(*tree.values[i], tree.get_proof(i)) for i in range(2)])
    )

    assert len(event_args(usdc, "Transfer", receipt)) == len(event_args(jct, "Transfer", receipt)) == 1
    assert balance(usdc, alice) == 6 * USDC and balance(jct, alice) == 2 * JCT


def test_claims_never_pay_out_staked_jct(chain):
    jct, settlement = chain.jct, chain.settlement
    stake(chain, chain.bob, 50 * JCT)
    chain.mint(jct, settlement.address, 2 * JCT)
    tree = post_tree(
        chain, 1, [[0, jct.address, chain.alice.address, 3 * JCT], [1, jct.address, chain.carol.address, 1]]
    )

    chain.assert_reverts(
        chain.alice, claim_call(chain, tree, 0), "InsufficientLiquidity", jct.address, 3 * JCT, 2 * JCT
    )
    chain.send(chain.carol, claim_call(chain, tree, 1))
    assert balance(jct, settlement.address) == 52 * JCT - 1


def test_random_claim_sequences_never_touch_staked_jct(chain):
    """Invariant: whatever leaves are posted and claimed and stakes slashed, the contract keeps at least the total
    stake in JCT, and the total stake is the sum of every account's stake and pending unstake."""
    jct, settlement = chain.jct, chain.settlement
    rng = random.Random(18)
    accounts = [chain.alice, chain.bob, chain.carol, chain.outsider]
    for account in accounts[:2]:
        stake(chain, account, rng.randrange(1, 20) * JCT)
    owed = [0] * len(accounts)
    slashes = 0
    for seq in range(1, 7):
        owed = [amount + rng.randrange(0, 4) * JCT + rng.randrange(0, 1000) for amount in owed]
        tree = post_tree(
            chain,
            seq,
            [[i, jct.address, account.address, owed[i]] for i, account in enumerate(accounts)],
            jct_rewards=rng.choice([0, 1, 3]) * JCT,
        )
        for i in rng.sample(range(len(accounts)), rng.randrange(1, len(accounts) + 1)):
            try:
                chain.send(accounts[i], claim_call(chain, tree, i))
            except ContractLogicError:
                pass  # NothingToClaim or InsufficientLiquidity: either way the stake stays
            if rng.random() < 0.3:
                staker = accounts[rng.randrange(2)]
                staked = settlement.functions.stakeOf(staker.address).call()
                if staked:
                    chain.send(staker, settlement.functions.requestUnstake(rng.randrange(1, staked + 1)))
            if rng.random() < 0.3:
                # A slash takes from the stake and the pending unstake; what stays staked stays unclaimable.
                staker = accounts[rng.randrange(2)]
                staked = settlement.functions.stakeOf(staker.address).call()
                pending = settlement.functions.pendingUnstakeOf(staker.address).call()[0]
                if staked + pending:
                    slashes += 1
                    evidence = slashes.to_bytes(32, "big")
                    chain.send(
                        chain.slasher,
                        settlement.functions.slash(staker.address, rng.randrange(1, staked + pending + 1), evidence),
                    )
            total_staked = settlement.functions.totalStaked().call()
            assert balance(jct, settlement.address) >= total_staked
            assert total_staked == sum(
                settlement.functions.stakeOf(account.address).call()
                + settlement.functions.pendingUnstakeOf(account.address).call()[0]
                for account in accounts
            )
            for j in range(len(accounts)):
                assert claimed(chain, j) <= owed[j]
    assert slashes > 0  # the sequence did slash


def test_random_interleavings_of_claims_around_builds_never_overpay_and_pay_everything_owed(chain):
    """Invariant of the two-bit claims: with claims against root r-1 before and after r's build, while r waits out
    its delay (or is rejected), and against r once active, nobody is ever paid more than the claimable root's
    cumulative amount, and claiming the last root pays everyone exactly what it owes."""
    usdc, settlement = chain.usdc, chain.settlement
    chain.send(chain.admin, settlement.functions.setClaimDelay(DELAY))
    chain.mint(usdc, settlement.address, 10**6 * USDC)
    rng = random.Random(1018)
    accounts = [chain.alice, chain.bob, chain.carol, chain.outsider]
    indices = [0, 1, 130, 255]  # two claim words, neighbours in each
    owed = [0] * len(accounts)
    active_owed = [0] * len(accounts)
    active_tree = None

    def claim_some(tree):
        for i in rng.sample(range(len(accounts)), rng.randrange(0, len(accounts) + 1)):
            try:
                chain.send(accounts[i], claim_call(chain, tree, i))
            except ContractLogicError as error:
                assert "AlreadyClaimed" in str(error) or "NothingToClaim" in str(error) or "0x" in str(error)
        for i, account in enumerate(accounts):
            assert balance(usdc, account.address) <= active_owed[i]

    for seq in range(1, 13):
        owed = [amount + rng.randrange(0, 3) * USDC for amount in owed]
        amounts = [[indices[i], usdc.address, account.address, owed[i]] for i, account in enumerate(accounts)]
        built = build_leaves(chain, amounts)  # r is built: r-1 is active, its claims continue
        tree = StandardMerkleTree.of([leaf.words() for leaf in built], LEAF_TYPES)
        if active_tree is not None:
            claim_some(active_tree)  # late claims against r-1 after r's build
        chain.send(chain.operator, settlement.functions.postBatch(seq, tree.root, DATA_HASH, 0))
        _POSTED[settlement.address][seq] = {leaf.index: leaf for leaf in built}
        if active_tree is not None:
            claim_some(active_tree)  # claims against r-1 while r is pending
        if rng.random() < 0.2:
            chain.send(chain.admin, settlement.functions.rejectBatch(seq))  # r-1 stays claimable
            continue
        chain.advance_time(DELAY)
        chain.send(chain.outsider, settlement.functions.activateBatch())
        active_tree, active_owed = tree, list(owed)
        claim_some(active_tree)  # claims against r once it is active
    for i, account in enumerate(accounts):
        try:
            chain.send(account, claim_call(chain, active_tree, i))
        except ContractLogicError:
            pass  # already claimed against the last root
        assert balance(usdc, account.address) == active_owed[i]
        assert claimed(chain, indices[i]) == active_owed[i]


# --- Delay, guardian, pause ---------------------------------------------------------------------


def with_delay(chain, delay=DELAY):
    chain.send(chain.admin, chain.settlement.functions.setClaimDelay(delay))


def test_a_posted_root_becomes_claimable_only_after_the_delay(chain):
    usdc, settlement = chain.usdc, chain.settlement
    chain.mint(usdc, settlement.address, 10 * USDC)
    with_delay(chain)
    tree = post_tree(
        chain, 1, [[0, usdc.address, chain.alice.address, 4 * USDC], [1, usdc.address, chain.bob.address, 1]]
    )
    activates_at = settlement.functions.activatesAt().call()
    assert activates_at == chain.latest_timestamp() + DELAY

    chain.assert_reverts(chain.alice, claim_call(chain, tree, 0), "ClaimsClosed")
    chain.assert_reverts(chain.outsider, settlement.functions.activateBatch(), "DelayNotElapsed", activates_at)
    chain.assert_reverts(
        chain.operator, settlement.functions.postBatch(2, ROOT_B, DATA_HASH, 0), "BatchPending", 1, activates_at
    )
    chain.advance_time(DELAY)
    receipt = chain.send(chain.outsider, settlement.functions.activateBatch())

    assert event_args(settlement, "BatchActivated", receipt) == [{"seq": 1, "root": bytes.fromhex(tree.root[2:])}]
    chain.send(chain.alice, claim_call(chain, tree, 0))
    assert balance(usdc, chain.alice.address) == 4 * USDC
    chain.assert_reverts(chain.outsider, settlement.functions.activateBatch(), "NoPendingBatch", 0)


def test_a_due_pending_batch_is_activated_by_the_next_post(chain):
    settlement = chain.settlement
    with_delay(chain)
    chain.send(chain.operator, settlement.functions.postBatch(1, ROOT_A, DATA_HASH, 0))
    chain.advance_time(DELAY)

    chain.send(chain.operator, settlement.functions.postBatch(2, ROOT_B, DATA_HASH, 0))

    assert settlement.functions.claimRoot().call() == ROOT_A
    assert settlement.functions.activeSeq().call() == 1
    assert settlement.functions.pendingSeq().call() == 2


def test_the_guardian_rejects_a_pending_root_and_the_previous_one_stays_claimable(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    good = post_tree(chain, 1, [[0, usdc.address, alice, 4 * USDC], [1, usdc.address, bob, 1]])
    with_delay(chain)
    # A stolen operator key posts a root paying itself the pot.
    theft = post_tree(
        chain, 2, [[0, usdc.address, alice, 4 * USDC], [7, usdc.address, chain.outsider.address, 990 * USDC]]
    )
    guardian_role = settlement.functions.GUARDIAN_ROLE().call()

    chain.assert_reverts(
        chain.operator,
        settlement.functions.rejectBatch(2),
        "AccessControlUnauthorizedAccount",
        chain.operator.address,
        guardian_role,
    )
    chain.assert_reverts(chain.admin, settlement.functions.rejectBatch(1), "NoPendingBatch", 1)
    receipt = chain.send(chain.admin, settlement.functions.rejectBatch(2))
    chain.advance_time(DELAY)

    assert event_args(settlement, "BatchRejected", receipt) == [{"seq": 2, "root": bytes.fromhex(theft.root[2:])}]
    chain.assert_reverts(chain.outsider, settlement.functions.activateBatch(), "NoPendingBatch", 0)
    chain.assert_reverts(chain.outsider, claim_call(chain, theft, 1), "InvalidProof")
    chain.send(chain.alice, claim_call(chain, good, 0))
    assert balance(usdc, chain.outsider.address) == 0
    assert settlement.functions.root().call() == bytes.fromhex(good.root[2:])
    assert settlement.functions.lastSeq().call() == 2


def test_pause_closes_claims_deposits_and_stake_until_unpaused(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice = chain.alice
    chain.mint(usdc, settlement.address, 100 * USDC)
    chain.mint(usdc, alice.address, 100 * USDC)
    chain.send(alice, usdc.functions.approve(settlement.address, 100 * USDC))
    stake(chain, alice, 5 * JCT)
    chain.mint(chain.jct, alice.address, 5 * JCT)
    tree = post_tree(chain, 1, [[0, usdc.address, alice.address, 7 * USDC], [1, usdc.address, chain.bob.address, 1]])

    chain.send(chain.admin, settlement.functions.pause())

    assert settlement.functions.claimRoot().call() == b"\x00" * 32
    chain.assert_reverts(alice, claim_call(chain, tree, 0), "ClaimsClosed")
    chain.assert_reverts(alice, settlement.functions.deposit(usdc.address, USDC), "EnforcedPause")
    chain.assert_reverts(alice, settlement.functions.stake(JCT), "EnforcedPause")
    chain.send(alice, settlement.functions.requestUnstake(JCT))
    # A batch posted while paused activates but stays closed until unpaused.
    chain.assert_reverts(chain.admin, settlement.functions.pause(), "EnforcedPause")
    chain.send(chain.admin, settlement.functions.unpause())
    chain.assert_reverts(chain.admin, settlement.functions.unpause(), "ExpectedPause")
    chain.send(alice, claim_call(chain, tree, 0))
    chain.send(alice, settlement.functions.deposit(usdc.address, USDC))
    assert balance(usdc, alice.address) == 106 * USDC


def test_only_the_guardian_pauses(chain):
    guardian_role = chain.settlement.functions.GUARDIAN_ROLE().call()

    for sender in (chain.operator, chain.outsider):
        chain.assert_reverts(
            sender,
            chain.settlement.functions.pause(),
            "AccessControlUnauthorizedAccount",
            sender.address,
            guardian_role,
        )
    assert chain.settlement.functions.paused().call() is False


# --- Funding rewards ---------------------------------------------------------------------------


def test_a_post_mints_the_batch_rewards_within_the_emission_schedule(chain):
    jct, settlement = chain.jct, chain.settlement
    tree = post_tree(
        chain,
        1,
        [[0, jct.address, chain.alice.address, 5 * JCT], [1, jct.address, chain.bob.address, 1]],
        jct_rewards=5 * JCT + 1,
    )

    chain.send(chain.alice, claim_call(chain, tree, 0))
    chain.send(chain.bob, claim_call(chain, tree, 1))

    assert balance(jct, settlement.address) == 0
    assert jct.functions.emitted().call() == 5 * JCT + 1


def test_emission_is_capped_by_the_schedule_and_reserved_to_the_emitter(chain):
    token = deploy(chain.w3, chain.admin, JCT_CONTRACT, chain.admin.address, 10)
    emitter_role = token.functions.EMITTER_ROLE().call()
    chain.assert_reverts(
        chain.operator,
        token.functions.emitRewards(chain.operator.address, 1),
        "AccessControlUnauthorizedAccount",
        chain.operator.address,
        emitter_role,
    )
    chain.send(chain.admin, token.functions.grantRole(emitter_role, chain.operator.address))
    chain.advance_time(100)
    available = token.functions.emissionAvailable().call()
    assert 1_000 <= available < 1_100

    chain.send(chain.operator, token.functions.emitRewards(chain.bob.address, 900))
    with pytest.raises(ContractLogicError):
        chain.send(chain.operator, token.functions.emitRewards(chain.bob.address, 10_000))
    assert balance(token, chain.bob.address) == 900


# --- Migration ---------------------------------------------------------------------------------


def test_a_new_deployment_carries_claimed_amounts_over_from_the_first_version(chain):
    usdc, jct = chain.usdc, chain.jct
    alice, bob = chain.alice.address, chain.bob.address
    old = deploy(
        chain.w3, chain.admin, SETTLEMENT_V1_CONTRACT, chain.admin.address, chain.operator.address, jct.address, 0
    )
    chain.send(chain.admin, old.functions.setTokenAllowed(usdc.address, True))
    chain.mint(usdc, old.address, 100 * USDC)
    old_leaves = [[usdc.address, alice, 30 * USDC], [usdc.address, bob, 20 * USDC]]
    old_tree = StandardMerkleTree.of(old_leaves, ["address", "address", "uint256"])
    chain.send(chain.operator, old.functions.postBatch(1, old_tree.root, DATA_HASH))
    chain.send(chain.alice, old.functions.claim(*old_leaves[0], old_tree.get_proof(0)))
    # The new deployment continues the platform's batch numbering: its first batch is seq 2.
    new = deploy(
        chain.w3,
        chain.admin,
        SETTLEMENT_CONTRACT,
        chain.admin.address,
        chain.operator.address,
        chain.admin.address,
        jct.address,
        0,
        0,
        1,
    )
    leaves = [(0, usdc.address, alice), (1, usdc.address, bob)]
    old_v2 = contract_at(chain.w3, SETTLEMENT_V2_CONTRACT, old.address)
    with pytest.raises(MigrationError, match="Pause the old Settlement"):
        claimed_on(old_v2, old, leaves)
    chain.send(chain.operator, old.functions.pause())

    # Version 3 keeps no claimed amounts: the first root of the new contract carries them as paid_before.
    carried = claimed_on(old_v2, old, leaves)
    chain.mint(usdc, new.address, 100 * USDC)
    amounts = [[0, usdc.address, alice, 35 * USDC], [1, usdc.address, bob, 20 * USDC]]
    tree = StandardMerkleTree.of([leaf.words() for leaf in build_leaves(chain, amounts, settlement=new)], LEAF_TYPES)
    chain.assert_reverts(chain.operator, new.functions.postBatch(1, tree.root, DATA_HASH, 0), "InvalidSequence", 2, 1)
    tree = post_tree(chain, 2, amounts, settlement=new, carried=carried)

    assert carried == {0: 30 * USDC}
    chain.send(chain.alice, claim_call(chain, tree, 0, settlement=new))
    chain.send(chain.bob, claim_call(chain, tree, 1, settlement=new))
    assert balance(usdc, alice) == 35 * USDC and balance(usdc, bob) == 20 * USDC
    chain.assert_reverts(chain.alice, claim_call(chain, tree, 0, settlement=new), "AlreadyClaimed", 0)
    assert (claimed(chain, 0, settlement=new), claimed(chain, 1, settlement=new)) == (35 * USDC, 20 * USDC)


def test_a_new_deployment_carries_claimed_amounts_over_from_the_second_version(chain):
    usdc, jct = chain.usdc, chain.jct
    alice, bob = chain.alice.address, chain.bob.address
    args = (chain.admin.address, chain.operator.address, chain.admin.address, jct.address, 0, 0)
    old = deploy(chain.w3, chain.admin, SETTLEMENT_V2_CONTRACT, *args, 0)
    chain.mint(usdc, old.address, 100 * USDC)
    old_leaves = [[7, usdc.address, alice, 30 * USDC], [9, usdc.address, bob, 20 * USDC]]
    old_tree = StandardMerkleTree.of(old_leaves, ["uint256", "address", "address", "uint128"])
    chain.send(chain.operator, old.functions.postBatch(1, old_tree.root, DATA_HASH, 0))
    chain.send(chain.bob, old.functions.claim(*old_leaves[1], old_tree.get_proof(1)))
    chain.send(chain.admin, old.functions.pause())
    new = deploy(chain.w3, chain.admin, SETTLEMENT_CONTRACT, *args, 1)
    chain.mint(usdc, new.address, 100 * USDC)

    carried = claimed_on(
        old, contract_at(chain.w3, SETTLEMENT_V1_CONTRACT, old.address), [leaf[:3] for leaf in old_leaves]
    )
    tree = post_tree(
        chain,
        2,
        [[7, usdc.address, alice, 30 * USDC], [9, usdc.address, bob, 25 * USDC]],
        settlement=new,
        carried=carried,
    )

    assert carried == {9: 20 * USDC}
    chain.send(chain.alice, claim_call(chain, tree, 0, settlement=new))
    chain.send(chain.bob, claim_call(chain, tree, 1, settlement=new))
    assert balance(usdc, alice) == 30 * USDC and balance(usdc, bob) == 25 * USDC


def test_deposit_pulls_tokens_and_emits_deposited(chain):
    usdc, settlement = chain.usdc, chain.settlement
    chain.mint(usdc, chain.alice.address, 100 * USDC)
    chain.send(chain.alice, usdc.functions.approve(settlement.address, 60 * USDC))

    receipt = chain.send(chain.alice, settlement.functions.deposit(usdc.address, 60 * USDC))

    assert event_args(settlement, "Deposited", receipt) == [
        {"token": usdc.address, "from": chain.alice.address, "amount": 60 * USDC}
    ]
    assert balance(usdc, chain.alice.address) == 40 * USDC
    assert balance(usdc, settlement.address) == 60 * USDC


def test_deposits_of_nothing_or_beyond_the_allowance_revert(chain):
    usdc, settlement = chain.usdc, chain.settlement
    chain.mint(usdc, chain.alice.address, 100 * USDC)
    chain.send(chain.alice, usdc.functions.approve(settlement.address, 10 * USDC))

    chain.assert_reverts(chain.alice, settlement.functions.deposit(usdc.address, 0), "ZeroAmount")
    chain.assert_reverts(
        chain.alice,
        settlement.functions.deposit(usdc.address, 11 * USDC),
        "ERC20InsufficientAllowance",
        settlement.address,
        10 * USDC,
        11 * USDC,
    )


def test_tokens_off_the_allow_list_cannot_be_deposited_until_the_admin_allows_them(chain):
    settlement = chain.settlement
    usdc = chain.usdc.address
    chain.send(chain.admin, settlement.functions.setTokenAllowed(usdc, False))

    chain.assert_reverts(chain.alice, settlement.functions.deposit(usdc, 1), "TokenNotAllowed", usdc)

    receipt = chain.send(chain.admin, settlement.functions.setTokenAllowed(usdc, True))
    assert event_args(settlement, "TokenAllowed", receipt) == [{"token": usdc, "allowed": True}]


def test_only_the_admin_sets_the_allow_list_the_cooldown_and_the_claim_delay(chain):
    settlement = chain.settlement
    admin_role = settlement.functions.DEFAULT_ADMIN_ROLE().call()

    for call in (
        settlement.functions.setTokenAllowed(chain.outsider.address, True),
        settlement.functions.setUnstakeCooldown(0),
        settlement.functions.setClaimDelay(0),
    ):
        chain.assert_reverts(
            chain.operator, call, "AccessControlUnauthorizedAccount", chain.operator.address, admin_role
        )
    receipt = chain.send(chain.admin, settlement.functions.setUnstakeCooldown(60))
    assert event_args(settlement, "UnstakeCooldownSet", receipt) == [{"cooldown": 60}]
    assert settlement.functions.unstakeCooldown().call() == 60
    assert settlement.functions.allowedTokens(chain.outsider.address).call() is False


def stake(chain, account, amount):
    """Mint ``amount`` JCT to ``account`` and stake all of it."""
    chain.mint(chain.jct, account.address, amount)
    chain.send(account, chain.jct.functions.approve(chain.settlement.address, amount))
    return chain.send(account, chain.settlement.functions.stake(amount))


def test_stake_locks_jct_and_emits_staked(chain):
    settlement = chain.settlement

    receipt = stake(chain, chain.alice, 10 * JCT)

    assert event_args(settlement, "Staked", receipt) == [{"account": chain.alice.address, "amount": 10 * JCT}]
    assert settlement.functions.stakeOf(chain.alice.address).call() == 10 * JCT
    assert settlement.functions.totalStaked().call() == 10 * JCT
    assert balance(chain.jct, settlement.address) == 10 * JCT
    chain.assert_reverts(chain.alice, settlement.functions.stake(0), "ZeroAmount")


def test_unstaked_jct_is_withdrawable_only_after_the_cooldown(chain):
    settlement = chain.settlement
    alice = chain.alice
    cooldown = settlement.functions.unstakeCooldown().call()
    stake(chain, alice, 10 * JCT)

    chain.assert_reverts(alice, settlement.functions.requestUnstake(11 * JCT), "InsufficientStake", 10 * JCT, 11 * JCT)
    receipt = chain.send(alice, settlement.functions.requestUnstake(4 * JCT))
    unlock_at = chain.latest_timestamp() + cooldown
    assert event_args(settlement, "UnstakeRequested", receipt) == [
        {"account": alice.address, "amount": 4 * JCT, "unlockAt": unlock_at}
    ]
    chain.assert_reverts(alice, settlement.functions.withdrawStake(), "CooldownNotElapsed", unlock_at)
    chain.advance_time(cooldown - 10)
    chain.assert_reverts(alice, settlement.functions.withdrawStake(), "CooldownNotElapsed", unlock_at)

    chain.advance_time(10)
    receipt = chain.send(alice, settlement.functions.withdrawStake())

    assert event_args(settlement, "StakeWithdrawn", receipt) == [{"account": alice.address, "amount": 4 * JCT}]
    assert balance(chain.jct, alice.address) == 4 * JCT
    assert settlement.functions.stakeOf(alice.address).call() == 6 * JCT
    assert settlement.functions.totalStaked().call() == 6 * JCT
    chain.assert_reverts(alice, settlement.functions.withdrawStake(), "NoPendingUnstake")


def test_a_new_unstake_request_adds_to_the_pending_amount_and_restarts_the_cooldown(chain):
    settlement = chain.settlement
    alice = chain.alice
    cooldown = settlement.functions.unstakeCooldown().call()
    stake(chain, alice, 10 * JCT)
    chain.send(alice, settlement.functions.requestUnstake(3 * JCT))
    chain.advance_time(cooldown)

    chain.send(alice, settlement.functions.requestUnstake(2 * JCT))
    unlock_at = chain.latest_timestamp() + cooldown

    assert settlement.functions.pendingUnstakeOf(alice.address).call() == [5 * JCT, unlock_at]
    chain.assert_reverts(alice, settlement.functions.withdrawStake(), "CooldownNotElapsed", unlock_at)
    chain.advance_time(cooldown)
    chain.send(alice, settlement.functions.withdrawStake())
    assert balance(chain.jct, alice.address) == 5 * JCT
