"""Settlement.sol on a Hardhat node: batches, claims with ledger.merkle proofs, deposits, staking, pause."""

from web3.logs import DISCARD

from ledger.merkle import StandardMerkleTree

LEAF_TYPES = ["address", "address", "uint256"]
ROOT_A = b"\xaa" * 32
ROOT_B = b"\xbb" * 32
DATA_HASH = b"\xdd" * 32
USDC = 10**6
JCT = 10**18


def post_tree(chain, seq, leaves):
    """Post the tree over ``leaves`` as batch ``seq`` and return it."""
    tree = StandardMerkleTree.of(leaves, LEAF_TYPES)
    chain.send(chain.operator, chain.settlement.functions.postBatch(seq, tree.root, DATA_HASH))
    return tree


def claim_call(chain, tree, index):
    """Build the claim of leaf ``index`` of ``tree`` with its proof."""
    token, account, cumulative = tree.values[index]
    return chain.settlement.functions.claim(token, account, cumulative, tree.get_proof(index))


def event_args(contract, event_name, receipt):
    """Return the arguments of every ``event_name`` that ``contract`` emitted in ``receipt``."""
    events = getattr(contract.events, event_name)().process_receipt(receipt, errors=DISCARD)
    return [dict(event["args"]) for event in events if event["address"] == contract.address]


def balance(token, account):
    return token.functions.balanceOf(account).call()


def test_operator_posts_batches_in_sequence(chain):
    settlement = chain.settlement

    receipt = chain.send(chain.operator, settlement.functions.postBatch(1, ROOT_A, DATA_HASH))
    chain.send(chain.operator, settlement.functions.postBatch(2, ROOT_B, DATA_HASH))

    assert event_args(settlement, "BatchPosted", receipt) == [{"seq": 1, "root": ROOT_A, "dataHash": DATA_HASH}]
    assert settlement.functions.lastSeq().call() == 2
    assert settlement.functions.root().call() == ROOT_B


def test_only_the_operator_posts_batches(chain):
    operator_role = chain.settlement.functions.OPERATOR_ROLE().call()

    for sender in (chain.admin, chain.outsider):
        chain.assert_reverts(
            sender,
            chain.settlement.functions.postBatch(1, ROOT_A, DATA_HASH),
            "AccessControlUnauthorizedAccount",
            sender.address,
            operator_role,
        )
    assert chain.settlement.functions.lastSeq().call() == 0


def test_batches_out_of_sequence_revert(chain):
    post_batch = chain.settlement.functions.postBatch

    chain.assert_reverts(chain.operator, post_batch(0, ROOT_A, DATA_HASH), "InvalidSequence", 1, 0)
    chain.assert_reverts(chain.operator, post_batch(2, ROOT_A, DATA_HASH), "InvalidSequence", 1, 2)
    chain.send(chain.operator, post_batch(1, ROOT_A, DATA_HASH))
    chain.assert_reverts(chain.operator, post_batch(1, ROOT_B, DATA_HASH), "InvalidSequence", 2, 1)
    chain.assert_reverts(chain.operator, post_batch(3, ROOT_B, DATA_HASH), "InvalidSequence", 2, 3)
    assert chain.settlement.functions.root().call() == ROOT_A


def test_claims_pay_each_account_its_cumulative_amount(chain):
    usdc, jct, settlement = chain.usdc, chain.jct, chain.settlement
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    chain.mint(jct, settlement.address, 100 * JCT)
    leaves = [
        [usdc.address, chain.alice.address, 150 * USDC + 1],
        [usdc.address, chain.bob.address, 25 * USDC],
        [jct.address, chain.alice.address, 3 * JCT],
        [jct.address, chain.carol.address, 7 * JCT + 5],
    ]
    tree = post_tree(chain, 1, leaves)

    for index, (token, account, cumulative) in enumerate(leaves):
        receipt = chain.send(chain.outsider, claim_call(chain, tree, index))
        assert event_args(settlement, "Claimed", receipt) == [
            {"token": token, "account": account, "amount": cumulative, "cumulativeAmount": cumulative}
        ]

    assert balance(usdc, chain.alice.address) == 150 * USDC + 1
    assert balance(usdc, chain.bob.address) == 25 * USDC
    assert balance(jct, chain.alice.address) == 3 * JCT
    assert balance(jct, chain.carol.address) == 7 * JCT + 5
    assert balance(usdc, settlement.address) == 1_000 * USDC - 175 * USDC - 1
    assert settlement.functions.claimed(usdc.address, chain.alice.address).call() == 150 * USDC + 1


def test_a_larger_cumulative_amount_in_a_later_batch_pays_only_the_difference(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    first = post_tree(chain, 1, [[usdc.address, alice, 40 * USDC], [usdc.address, bob, 10 * USDC]])
    chain.send(chain.alice, claim_call(chain, first, 0))
    second = post_tree(chain, 2, [[usdc.address, alice, 65 * USDC], [usdc.address, bob, 30 * USDC]])

    receipt = chain.send(chain.alice, claim_call(chain, second, 0))
    chain.send(chain.bob, claim_call(chain, second, 1))

    assert event_args(settlement, "Claimed", receipt)[0]["amount"] == 25 * USDC
    assert balance(usdc, alice) == 65 * USDC
    assert balance(usdc, bob) == 30 * USDC


def test_replaying_a_claim_reverts_and_pays_nothing(chain):
    usdc, settlement = chain.usdc, chain.settlement
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    tree = post_tree(chain, 1, [[usdc.address, chain.alice.address, 40 * USDC], [usdc.address, chain.bob.address, 1]])
    chain.send(chain.alice, claim_call(chain, tree, 0))

    chain.assert_reverts(chain.alice, claim_call(chain, tree, 0), "NothingToClaim", usdc.address, chain.alice.address)
    assert balance(usdc, chain.alice.address) == 40 * USDC


def test_claims_with_a_wrong_proof_or_amount_revert(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    tree = post_tree(chain, 1, [[usdc.address, alice, 40 * USDC], [usdc.address, bob, 10 * USDC]])
    claim = settlement.functions.claim

    chain.assert_reverts(chain.alice, claim(usdc.address, alice, 40 * USDC, tree.get_proof(1)), "InvalidProof")
    chain.assert_reverts(chain.alice, claim(usdc.address, alice, 41 * USDC, tree.get_proof(0)), "InvalidProof")
    chain.assert_reverts(chain.bob, claim(usdc.address, bob, 40 * USDC, tree.get_proof(0)), "InvalidProof")
    chain.assert_reverts(chain.alice, claim(usdc.address, alice, 40 * USDC, []), "InvalidProof")
    assert balance(usdc, alice) == 0


def test_proofs_for_an_earlier_batch_stop_working_once_a_new_root_is_posted(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice, bob = chain.alice.address, chain.bob.address
    chain.mint(usdc, settlement.address, 1_000 * USDC)
    first = post_tree(chain, 1, [[usdc.address, alice, 40 * USDC], [usdc.address, bob, 10 * USDC]])
    post_tree(chain, 2, [[usdc.address, alice, 45 * USDC], [usdc.address, bob, 10 * USDC]])

    chain.assert_reverts(chain.alice, claim_call(chain, first, 0), "InvalidProof")


def test_claims_never_pay_out_staked_jct(chain):
    jct, settlement = chain.jct, chain.settlement
    chain.mint(jct, chain.bob.address, 50 * JCT)
    chain.send(chain.bob, jct.functions.approve(settlement.address, 50 * JCT))
    chain.send(chain.bob, settlement.functions.stake(50 * JCT))
    chain.mint(jct, settlement.address, 2 * JCT)
    tree = post_tree(chain, 1, [[jct.address, chain.alice.address, 3 * JCT], [jct.address, chain.carol.address, 1]])

    chain.assert_reverts(
        chain.alice, claim_call(chain, tree, 0), "InsufficientLiquidity", jct.address, 3 * JCT, 2 * JCT
    )
    chain.send(chain.carol, claim_call(chain, tree, 1))
    assert balance(jct, settlement.address) == 52 * JCT - 1


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


def test_tokens_off_the_allow_list_are_rejected_until_the_admin_allows_them(chain):
    settlement = chain.settlement
    usdc = chain.usdc.address
    chain.send(chain.admin, settlement.functions.setTokenAllowed(usdc, False))
    tree = post_tree(chain, 1, [[usdc, chain.alice.address, 5], [usdc, chain.bob.address, 6]])

    chain.assert_reverts(chain.alice, settlement.functions.deposit(usdc, 1), "TokenNotAllowed", usdc)
    chain.assert_reverts(chain.alice, claim_call(chain, tree, 0), "TokenNotAllowed", usdc)

    chain.mint(chain.usdc, settlement.address, 5)
    receipt = chain.send(chain.admin, settlement.functions.setTokenAllowed(usdc, True))
    chain.send(chain.alice, claim_call(chain, tree, 0))
    assert event_args(settlement, "TokenAllowed", receipt) == [{"token": usdc, "allowed": True}]
    assert balance(chain.usdc, chain.alice.address) == 5


def test_only_the_admin_sets_the_allow_list_and_the_cooldown(chain):
    settlement = chain.settlement
    admin_role = settlement.functions.DEFAULT_ADMIN_ROLE().call()

    for call in (
        settlement.functions.setTokenAllowed(chain.outsider.address, True),
        settlement.functions.setUnstakeCooldown(0),
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


def test_pause_blocks_claims_deposits_and_stake_until_unpaused(chain):
    usdc, settlement = chain.usdc, chain.settlement
    alice = chain.alice
    chain.mint(usdc, settlement.address, 100 * USDC)
    chain.mint(usdc, alice.address, 100 * USDC)
    chain.send(alice, usdc.functions.approve(settlement.address, 100 * USDC))
    stake(chain, alice, 5 * JCT)
    chain.mint(chain.jct, alice.address, 5 * JCT)
    tree = post_tree(chain, 1, [[usdc.address, alice.address, 7 * USDC], [usdc.address, chain.bob.address, 1]])

    chain.send(chain.operator, settlement.functions.pause())

    chain.assert_reverts(alice, claim_call(chain, tree, 0), "EnforcedPause")
    chain.assert_reverts(alice, settlement.functions.deposit(usdc.address, USDC), "EnforcedPause")
    chain.assert_reverts(alice, settlement.functions.stake(JCT), "EnforcedPause")
    chain.send(alice, settlement.functions.requestUnstake(JCT))
    chain.send(chain.operator, settlement.functions.unpause())
    chain.send(alice, claim_call(chain, tree, 0))
    chain.send(alice, settlement.functions.deposit(usdc.address, USDC))
    assert balance(usdc, alice.address) == 106 * USDC


def test_only_the_operator_pauses(chain):
    operator_role = chain.settlement.functions.OPERATOR_ROLE().call()

    chain.assert_reverts(
        chain.admin,
        chain.settlement.functions.pause(),
        "AccessControlUnauthorizedAccount",
        chain.admin.address,
        operator_role,
    )
    assert chain.settlement.functions.paused().call() is False
