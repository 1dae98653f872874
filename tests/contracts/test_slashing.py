"""Settlement.slash on a Hardhat node: the slasher takes stake (active, then pending unstake) to the treasury."""

from web3.logs import DISCARD

from tests.contracts.test_settlement import JCT, balance, claim_call, post_tree, stake

EVIDENCE = b"\x5e" * 32
OTHER_EVIDENCE = b"\x5f" * 32


def slashed_events(chain, receipt):
    events = chain.settlement.events.StakeSlashed().process_receipt(receipt, errors=DISCARD)
    return [dict(event["args"]) for event in events]


def test_a_slash_takes_the_stake_to_the_treasury_and_emits_stake_slashed(chain):
    settlement, jct = chain.settlement, chain.jct
    stake(chain, chain.alice, 10 * JCT)
    treasury = settlement.functions.treasury().call()
    assert treasury == chain.admin.address

    receipt = chain.send(chain.slasher, settlement.functions.slash(chain.alice.address, 3 * JCT, EVIDENCE))

    assert slashed_events(chain, receipt) == [
        {
            "account": chain.alice.address,
            "evidence": EVIDENCE,
            "amount": 3 * JCT,
            "fromStake": 3 * JCT,
            "fromPending": 0,
        }
    ]
    assert settlement.functions.stakeOf(chain.alice.address).call() == 7 * JCT
    assert settlement.functions.totalStaked().call() == 7 * JCT
    assert balance(jct, settlement.address) == 7 * JCT
    assert balance(jct, treasury) == 3 * JCT
    assert balance(jct, chain.slasher.address) == 0
    assert settlement.functions.slashedEvidence(EVIDENCE).call() is True


def test_the_admin_moves_the_treasury_and_the_slasher_cannot(chain):
    settlement = chain.settlement
    admin_role = settlement.functions.DEFAULT_ADMIN_ROLE().call()
    stake(chain, chain.alice, 10 * JCT)

    chain.assert_reverts(
        chain.slasher,
        settlement.functions.setTreasury(chain.slasher.address),
        "AccessControlUnauthorizedAccount",
        chain.slasher.address,
        admin_role,
    )
    chain.assert_reverts(chain.admin, settlement.functions.setTreasury("0x" + "00" * 20), "ZeroAddress")
    chain.send(chain.admin, settlement.functions.setTreasury(chain.carol.address))
    chain.send(chain.slasher, settlement.functions.slash(chain.alice.address, 2 * JCT, EVIDENCE))

    assert balance(chain.jct, chain.carol.address) == 2 * JCT


def test_only_the_slasher_slashes_not_the_operator_guardian_admin_or_staker(chain):
    settlement = chain.settlement
    slasher_role = settlement.functions.SLASHER_ROLE().call()
    stake(chain, chain.alice, 10 * JCT)

    # The admin is also the guardian in this deployment; the operator posts batches.
    for sender in (chain.operator, chain.admin, chain.alice, chain.outsider):
        chain.assert_reverts(
            sender,
            settlement.functions.slash(chain.alice.address, JCT, EVIDENCE),
            "AccessControlUnauthorizedAccount",
            sender.address,
            slasher_role,
        )
    assert settlement.functions.stakeOf(chain.alice.address).call() == 10 * JCT
    assert settlement.functions.slashedEvidence(EVIDENCE).call() is False


def test_a_slash_larger_than_stake_and_pending_unstake_reverts(chain):
    settlement = chain.settlement
    stake(chain, chain.alice, 10 * JCT)
    chain.send(chain.alice, settlement.functions.requestUnstake(4 * JCT))

    chain.assert_reverts(
        chain.slasher,
        settlement.functions.slash(chain.alice.address, 10 * JCT + 1, EVIDENCE),
        "InsufficientStake",
        10 * JCT,
        10 * JCT + 1,
    )
    chain.assert_reverts(
        chain.slasher, settlement.functions.slash(chain.bob.address, 1, EVIDENCE), "InsufficientStake", 0, 1
    )
    chain.assert_reverts(chain.slasher, settlement.functions.slash(chain.alice.address, 0, EVIDENCE), "ZeroAmount")
    chain.assert_reverts(
        chain.slasher, settlement.functions.slash(chain.alice.address, JCT, b"\x00" * 32), "ZeroEvidence"
    )
    assert settlement.functions.stakeOf(chain.alice.address).call() == 6 * JCT
    assert settlement.functions.totalStaked().call() == 10 * JCT


def test_one_evidence_slashes_once(chain):
    settlement = chain.settlement
    stake(chain, chain.alice, 10 * JCT)
    chain.send(chain.slasher, settlement.functions.slash(chain.alice.address, JCT, EVIDENCE))

    chain.assert_reverts(
        chain.slasher, settlement.functions.slash(chain.alice.address, JCT, EVIDENCE), "EvidenceUsed", EVIDENCE
    )
    chain.send(chain.slasher, settlement.functions.slash(chain.alice.address, JCT, OTHER_EVIDENCE))
    assert settlement.functions.stakeOf(chain.alice.address).call() == 8 * JCT


def test_a_slash_during_the_unstake_cooldown_takes_the_stake_then_the_pending_unstake(chain):
    settlement, jct, alice = chain.settlement, chain.jct, chain.alice
    cooldown = settlement.functions.unstakeCooldown().call()
    stake(chain, alice, 10 * JCT)
    chain.send(alice, settlement.functions.requestUnstake(6 * JCT))
    unlock_at = chain.latest_timestamp() + cooldown

    receipt = chain.send(chain.slasher, settlement.functions.slash(alice.address, 5 * JCT, EVIDENCE))

    assert slashed_events(chain, receipt) == [
        {"account": alice.address, "evidence": EVIDENCE, "amount": 5 * JCT, "fromStake": 4 * JCT, "fromPending": JCT}
    ]
    assert settlement.functions.stakeOf(alice.address).call() == 0
    # The pending unstake keeps its unlock time: slashing does not restart (or end) the cool-down.
    assert settlement.functions.pendingUnstakeOf(alice.address).call() == [5 * JCT, unlock_at]
    assert settlement.functions.totalStaked().call() == 5 * JCT
    chain.assert_reverts(alice, settlement.functions.withdrawStake(), "CooldownNotElapsed", unlock_at)

    chain.advance_time(cooldown)
    chain.send(alice, settlement.functions.withdrawStake())
    assert balance(jct, alice.address) == 5 * JCT
    assert balance(jct, settlement.address) == 0
    assert settlement.functions.totalStaked().call() == 0


def test_slashing_the_whole_pending_unstake_leaves_nothing_to_withdraw(chain):
    settlement, alice = chain.settlement, chain.alice
    stake(chain, alice, 4 * JCT)
    chain.send(alice, settlement.functions.requestUnstake(4 * JCT))

    chain.send(chain.slasher, settlement.functions.slash(alice.address, 4 * JCT, EVIDENCE))

    assert settlement.functions.pendingUnstakeOf(alice.address).call() == [0, 0]
    chain.advance_time(settlement.functions.unstakeCooldown().call())
    chain.assert_reverts(alice, settlement.functions.withdrawStake(), "NoPendingUnstake")


def test_a_slash_works_while_paused_and_never_pays_claims_from_stake(chain):
    settlement, jct = chain.settlement, chain.jct
    stake(chain, chain.bob, 10 * JCT)
    chain.mint(jct, settlement.address, 2 * JCT)
    tree = post_tree(chain, 1, [[0, jct.address, chain.alice.address, 3 * JCT]])
    chain.send(chain.admin, settlement.functions.pause())  # the admin holds GUARDIAN_ROLE here

    chain.send(chain.slasher, settlement.functions.slash(chain.bob.address, 4 * JCT, EVIDENCE))
    chain.send(chain.admin, settlement.functions.unpause())

    # The contract holds 8 JCT: 6 still staked and the 2 minted; a claim of 3 finds only those 2.
    chain.assert_reverts(
        chain.alice, claim_call(chain, tree, 0), "InsufficientLiquidity", jct.address, 3 * JCT, 2 * JCT
    )
    assert balance(jct, settlement.address) == 8 * JCT
    assert settlement.functions.totalStaked().call() == 6 * JCT
