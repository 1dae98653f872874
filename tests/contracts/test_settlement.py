"""Settlement.sol on a Hardhat node: delayed batches, indexed cumulative claims, deposits, staking, pause, seeding."""

import random

import pytest
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from ledger.chain.artifacts import JCT_CONTRACT, SETTLEMENT_CONTRACT, SETTLEMENT_V1_CONTRACT
from ledger.chain.client import deploy
from ledger.merkle import StandardMerkleTree
from ledger.settlement.migration import MigrationError, claimed_carry_over

LEAF_TYPES = ["uint256", "address", "address", "uint128"]
ROOT_A = b"\xaa" * 32
ROOT_B = b"\xbb" * 32
DATA_HASH = b"\xdd" * 32
USDC = 10**6
JCT = 10**18
DELAY = 3600


def post_tree(chain, seq, leaves, *, jct_rewards=0):
    """Post the tree over ``leaves`` as batch ``seq`` and return it."""
    tree = StandardMerkleTree.of(leaves, LEAF_TYPES)
    chain.send(chain.operator, chain.settlement.functions.postBatch(seq, tree.root, DATA_HASH, jct_rewards))
    return tree


def claim_call(chain, tree, index):
    """Build the claim of leaf ``index`` of ``tree`` with its proof."""
    return chain.settlement.functions.claim(*tree.values[index], tree.get_proof(index))


def event_args(contract, event_name, receipt):
    """Return the arguments of every ``event_name`` that ``contract`` emitted in ``receipt``."""
    events = getattr(contract.events, event_name)().process_receipt(receipt, errors=DISCARD)
    return [dict(event["args"]) for event in events if event["address"] == contract.address]


def balance(token, account):
    return token.functions.balanceOf(account).call()


def claimed(chain, index):
    return chain.settlement.functions.claimed(index).call()


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

    chain.assert_reverts(chain.alice, claim_call(chain, tree, 0), "NothingToClaim", 0)
    assert balance(usdc, chain.alice.address) == 40 * USDC


def test_claims_with_a_wrong_proof_amount_index_token_or_account_revert(chain):
    usdc, jct, settlement = chain.usdc, chain.jct, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    chain.mint(jct, settlement.address, 1_000 * JCT)
    tree = post_tree(chain, 1, [[0, usdc.address, alice, 40 * USDC], [1, usdc.address, bob, 10 * USDC]])
    claim = settlement.functions.claim

    for call in (
        claim(0, usdc.address, alice, 40 * USDC, tree.get_proof(1)),
        claim(0, usdc.address, alice, 41 * USDC, tree.get_proof(0)),
        claim(1, usdc.address, alice, 40 * USDC, tree.get_proof(0)),  # another allocation's index
        claim(0, jct.address, alice, 40 * USDC, tree.get_proof(0)),  # another token
        claim(0, usdc.address, bob, 40 * USDC, tree.get_proof(0)),  # another account's leaf
        claim(0, usdc.address, alice, 40 * USDC, []),
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

    bad = [(*leaves[0], tree.get_proof(0)), (*leaves[1], tree.get_proof(0))]
    chain.assert_reverts(chain.alice, settlement.functions.claimMany(bad), "InvalidProof")  # all or nothing
    assert balance(usdc, alice) == 0

    receipt = chain.send(
        chain.alice, settlement.functions.claimMany([(*leaf, tree.get_proof(i)) for i, leaf in enumerate(leaves)])
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
    indices = {(usdc.address, alice): 0, (usdc.address, bob): 1}
    with pytest.raises(MigrationError, match="Pause the old Settlement"):
        claimed_carry_over(old=old, new=new, allocations=indices, sender=chain.admin)
    chain.send(chain.operator, old.functions.pause())

    carried = claimed_carry_over(old=old, new=new, allocations=indices, sender=chain.admin)
    chain.mint(usdc, new.address, 100 * USDC)
    tree = StandardMerkleTree.of([[0, usdc.address, alice, 35 * USDC], [1, usdc.address, bob, 20 * USDC]], LEAF_TYPES)
    chain.assert_reverts(chain.operator, new.functions.postBatch(1, tree.root, DATA_HASH, 0), "InvalidSequence", 2, 1)
    chain.send(chain.operator, new.functions.postBatch(2, tree.root, DATA_HASH, 0))

    assert carried == {0: 30 * USDC}
    chain.send(chain.alice, new.functions.claim(*tree.values[0], tree.get_proof(0)))
    chain.send(chain.bob, new.functions.claim(*tree.values[1], tree.get_proof(1)))
    assert balance(usdc, alice) == 35 * USDC and balance(usdc, bob) == 20 * USDC
    chain.assert_reverts(chain.alice, new.functions.claim(*tree.values[0], tree.get_proof(0)), "NothingToClaim", 0)
    chain.assert_reverts(chain.admin, new.functions.seedClaimed([5], [1]), "SeedingClosed")
    with pytest.raises(MigrationError, match="already has a batch"):
        claimed_carry_over(old=old, new=new, allocations=indices, sender=chain.admin)


def test_seeding_is_the_admins_and_cannot_overwrite(chain):
    settlement = chain.settlement
    admin_role = settlement.functions.DEFAULT_ADMIN_ROLE().call()
    chain.assert_reverts(
        chain.operator,
        settlement.functions.seedClaimed([0], [1]),
        "AccessControlUnauthorizedAccount",
        chain.operator.address,
        admin_role,
    )
    chain.send(chain.admin, settlement.functions.seedClaimed([3], [9]))
    chain.assert_reverts(chain.admin, settlement.functions.seedClaimed([3], [1]), "AlreadySeeded", 3)
    chain.assert_reverts(chain.admin, settlement.functions.seedClaimed([3, 4], [1]), "LengthMismatch")
    assert claimed(chain, 3) == 9 and claimed(chain, 2) == 0


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
