"""Where reputation acts: admission to rounds, ties between equal asks, Proof of Contribution, the offers API."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from nodes.models import NodePlacement, UsageReport
from pricing.models import Allocation, BidState
from pricing.services import bid_submit, market_round_run
from reputation.contribution import contribution_list
from reputation.models import EvidenceKind
from reputation.services import evidence_record
from tests.factories import UserFactory, online_node


def _bad(node, n: int = 1) -> None:
    for i in range(n):
        evidence_record(
            kind=EvidenceKind.PLACEMENT_LOST,
            subject_kind="node",
            node_id=node.pk,
            source="t",
            source_key=f"b{node.pk}{i}",
        )


def _good(node, n: int = 1) -> None:
    for i in range(n):
        evidence_record(
            kind=EvidenceKind.PLACEMENT_COMPLETED,
            subject_kind="node",
            node_id=node.pk,
            source="t",
            source_key=f"g{node.pk}{i}",
        )


def _round(buyer, node, units=1, ref="r1"):
    bid = bid_submit(owner=buyer, pool_name="ada-12g", units=units, max_price_per_hour=2_000_000, reference=ref)
    market_round_run(pool_id=node.vgpus.first().pool_id)
    bid.refresh_from_db()
    return bid


@pytest.mark.django_db
def test_asks_of_nodes_below_the_pools_minimum_score_do_not_enter_rounds(settings):
    buyer = UserFactory()
    shady = online_node(UserFactory(), name="shady", vgpus=1)
    _bad(shady, 2)  # 1 / (2 + 6) = 0.125 < 0.2
    bid = _round(buyer, shady)
    assert bid.state == BidState.PENDING
    settings.REPUTATION_POOL_MIN_SCORES = "ada-12g=0.1"
    market_round_run(pool_id=shady.vgpus.first().pool_id)
    bid.refresh_from_db()
    assert bid.state == BidState.WON


@pytest.mark.django_db
def test_between_equal_asks_the_higher_score_sells_and_a_new_node_can_win():
    buyer = UserFactory()
    first = online_node(UserFactory(), name="first", vgpus=1)  # the engine's input order would favour it
    second = online_node(UserFactory(), name="second", vgpus=1)
    _bad(first)  # 0.2: still admitted
    _good(second)
    bid = _round(buyer, first)
    assert Allocation.objects.get(bid=bid).node == second
    newcomer_pool_bid = _round(buyer, first, ref="r2")
    assert Allocation.objects.get(bid=newcomer_pool_bid).node == first  # admitted at 0.2 when it is all there is


@pytest.mark.django_db
def test_equal_hours_with_different_scores_split_proof_of_contribution_by_the_weights(settings):
    settings.POC_MAX_JCT_PER_USDC_FEE = ""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    buyer = UserFactory()
    nodes = [online_node(UserFactory(), name="a", vgpus=1), online_node(UserFactory(), name="b", vgpus=1)]
    _good(nodes[0], 3)  # 4/5 = 0.8
    _bad(nodes[1])  # 1/5 = 0.2
    for node in nodes:
        bid = bid_submit(
            owner=buyer, pool_name="ada-12g", units=1, max_price_per_hour=1, reference=f"poc{node.pk}", deadline=start
        )
        placement = NodePlacement.objects.create(node=node, placement_id=f"rental-1-{bid.pk}-{node.pk}")
        ms = int(start.timestamp() * 1000)
        UsageReport.objects.create(
            placement=placement,
            seq=1,
            interval_start_ms=ms,
            interval_end_ms=ms + 3_600_000,
            vgpu_count=1,
            vgpu_milliseconds=3_600_000,
            signature=b"x",
        )
    contributions = {c.user_id: c for c in contribution_list(start=start, end=start + timedelta(days=1))}
    a, b = contributions[nodes[0].owner_id], contributions[nodes[1].owner_id]
    # Weight = score / cold-start score (0.5): 1.6 and 0.4; a provider without evidence weighs 1.
    assert (a.reputation_weight, b.reputation_weight) == (Decimal("1.6"), Decimal("0.4"))
    assert a.vgpu_milliseconds == b.vgpu_milliseconds
    assert a.score == 4 * b.score
    settings.REPUTATION_POC_WEIGHTS = False
    assert {c.reputation_weight for c in contribution_list(start=start, end=start + timedelta(days=1))} == {1}


@pytest.mark.django_db
def test_the_public_pool_scores_show_each_nodes_score_and_the_distribution():
    good = online_node(UserFactory(), name="g", vgpus=1)
    bad = online_node(UserFactory(), name="b", vgpus=1)
    _good(good, 3)
    _bad(bad)
    body = APIClient().get("/api/v1/reputation/pools/").json()
    assert body[0]["pool"] == "ada-12g" and body[0]["nodes"] == 2
    assert body[0]["node_scores"] == [{"node": good.pk, "score": "0.800000"}, {"node": bad.pk, "score": "0.200000"}]
    assert (body[0]["lowest"], body[0]["highest"], body[0]["min_score_to_enter"]) == (
        "0.200000",
        "0.800000",
        "0.200000",
    )


@pytest.mark.django_db
def test_the_market_page_shows_each_pools_score_distribution(client):
    _bad(online_node(UserFactory(), name="b", vgpus=1))
    page = client.get("/market/").content.decode()
    assert 'id="pool-scores"' in page and "0.200000" in page


@pytest.mark.django_db
def test_in_real_mode_a_node_whose_provider_has_not_staked_on_chain_the_pools_minimum_does_not_enter_rounds(settings):
    import uuid

    from ledger.models import StakeEvent, Wallet

    settings.CHAIN_RPC_URL = "http://127.0.0.1:9"  # real mode: the gate reads the recorded on-chain stake
    settings.REPUTATION_POOL_MIN_STAKE_JCT = "100"
    buyer = UserFactory()
    unstaked = online_node(UserFactory(), name="unstaked", vgpus=1, price=100_000)  # the cheaper ask
    staked = online_node(UserFactory(), name="staked", vgpus=1, price=500_000)
    address = "0x" + "ab" * 20
    Wallet.objects.create(user=staked.owner, address=address, chain_id=31337)
    for kind, jct in ((StakeEvent.Kind.STAKED, 150), (StakeEvent.Kind.UNSTAKE_REQUESTED, 40)):
        StakeEvent.objects.create(
            chain_id=31337,
            tx_hash="0x" + uuid.uuid4().hex * 2,
            log_index=0,
            block_number=1,
            kind=kind,
            account=address,
            amount=jct * 10**18,
        )
    bid = _round(buyer, staked)
    assert Allocation.objects.get(bid=bid).node == staked  # 110 JCT staked; the unstaked node is kept out
    settings.REPUTATION_POOL_MIN_STAKES_JCT = "ada-12g=120"
    assert _round(buyer, unstaked, ref="r2").state == BidState.PENDING  # 110 < 120: nobody enters
    settings.REPUTATION_POOL_MIN_STAKE_JCT = "0"
    settings.REPUTATION_POOL_MIN_STAKES_JCT = ""
    market_round_run(pool_id=unstaked.vgpus.first().pool_id)
    assert Allocation.objects.filter(node=unstaked).exists()


@pytest.mark.django_db
def test_the_recorded_onchain_stake_subtracts_only_the_active_part_of_a_slash():
    """A slash that took 30 JCT from a 40 JCT pending unstake lowers the active stake by 20, not by 50.

    The pending part was already subtracted with its UnstakeRequested event (found at merge time: the whole slash
    was subtracted, so a slash during the cool-down counted its pending part twice).
    """
    import uuid

    from django.utils import timezone

    from ledger.models import StakeEvent, Wallet
    from reputation.acts import onchain_stakes

    provider = UserFactory()
    address = "0x" + "cd" * 20
    Wallet.objects.create(user=provider, address=address, chain_id=31337)
    events = (
        (StakeEvent.Kind.STAKED, 150, 0),
        (StakeEvent.Kind.UNSTAKE_REQUESTED, 40, 0),
        (StakeEvent.Kind.SLASHED, 50, 30),
    )
    for kind, jct, from_pending in events:
        StakeEvent.objects.create(
            chain_id=31337,
            tx_hash="0x" + uuid.uuid4().hex * 2,
            log_index=0,
            block_number=1,
            kind=kind,
            account=address,
            amount=jct * 10**18,
            from_pending=from_pending * 10**18,
        )
    stakes = onchain_stakes(user_ids={provider.pk}, at=timezone.now() + timedelta(seconds=1))
    assert stakes == {provider.pk: (150 - 40 - 20) * 10**18}
