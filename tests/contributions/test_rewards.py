"""Rewards: accepted records earn the data contributors' share of a PoC epoch, paid in JCT through the next
settlement batch, whose DA copy lists a salted commitment to each record accepted since the last batch."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

import tests.settlement.conftest as settlement_fixtures
from contributions.models import DataReward, Record
from contributions.review import contribution_review_run
from contributions.rewards import data_scores, record_salt
from ledger.currencies import Currency
from ledger.models import Account, AccountKind
from ledger.settlement.batches import settlement_batch_run
from ledger.settlement.commitments import transaction_commitment
from reputation.contribution import contribution_epoch_close, epoch_bounds
from tests.contributions.conftest import pair, record
from tests.factories import UserFactory
from tests.settlement.helpers import claim_call, leaf_amounts, link_wallet
from tests.settlement.test_batches import proof_for

JCT = 10**18

# The Hardhat node, its contracts and Janction pointed at them: the settlement tests' fixtures.
hardhat_w3 = settlement_fixtures.hardhat_w3
deployed_chain = settlement_fixtures.deployed_chain
chain = settlement_fixtures.chain
live = settlement_fixtures.live


@pytest.fixture
def epoch(settings):
    """One-hour epochs emitting 1000 JCT, 10% to data contributors; return the last finished epoch."""
    settings.POC_EPOCH_SECONDS = 3600
    settings.POC_EMISSION_JCT = "1000"
    settings.POC_DATA_SHARE = "0.1"
    settings.POC_MAX_JCT_PER_USDC_FEE = ""
    return epoch_bounds(moment=timezone.now() - timedelta(hours=1))


def accept_in(ext, contents: list[str], start) -> list[Record]:
    """Upload, auto-accept and date the acceptance inside the epoch starting at ``start``."""
    items = ext.upload([record(content) for content in contents]).json()["items"]
    contribution_review_run()
    ids = [item["id"] for item in items if item["id"]]
    Record.objects.filter(pk__in=ids, status="accepted").update(accepted_at=start + timedelta(minutes=5))
    return list(Record.objects.filter(pk__in=ids).order_by("pk"))


def jct_earnings(user) -> int:
    account = Account.objects.filter(owner=user, kind=AccountKind.EARNINGS, currency=Currency.JCT).first()
    return int(account.balance) if account else 0


def test_a_duplicate_earns_nothing_and_caps_bound_what_one_device_and_account_earn(db, epoch, settings):
    start, end = epoch
    settings.POC_DATA_MAX_RECORDS_PER_DEVICE_EPOCH = 2
    settings.POC_DATA_MAX_RECORDS_PER_USER_EPOCH = 3
    first, second = pair(UserFactory()), pair(UserFactory())
    flooder = pair(UserFactory())
    accept_in(first, ["what is the capital of portugal"], start)
    accept_in(second, ["what is the capital of portugal", "tallest mountain in europe"], start)  # one duplicate
    accept_in(flooder, ["best hiking boots", "sourdough starter ratio", "cheap flights lisbon"], start)
    second_device = pair(flooder.user)
    accept_in(second_device, ["rust lifetimes explained", "django select for update"], start)

    assert data_scores(start, end) == {first.user.pk: 1, second.user.pk: 1, flooder.user.pk: 3}
    closed = contribution_epoch_close(start=start)

    share = 100 * JCT
    assert jct_earnings(first.user) + jct_earnings(second.user) + jct_earnings(flooder.user) == share
    assert jct_earnings(first.user) == jct_earnings(second.user) == share // 5
    assert int(closed.distributed) == share  # no providers this epoch: the rest is not emitted
    assert {(r.user_id, r.records_counted) for r in DataReward.objects.all()} == {
        (first.user.pk, 1),
        (second.user.pk, 1),
        (flooder.user.pk, 3),
    }
    contribution_epoch_close(start=start)  # closing again pays nothing more
    assert jct_earnings(first.user) == share // 5 and DataReward.objects.count() == 3


def test_records_accepted_in_another_epoch_or_deleted_before_it_closes_earn_nothing(db, epoch):
    start, _ = epoch
    ext = pair(UserFactory())
    late = accept_in(ext, ["what is the capital of portugal"], start)[0]
    Record.objects.filter(pk=late.pk).update(accepted_at=start + timedelta(hours=1, minutes=1))
    gone = accept_in(ext, ["tallest mountain in europe"], start)[0]
    assert APIClient().delete(f"/api/v1/contributions/records/{gone.pk}/").status_code == 401  # anonymous
    from contributions.services import record_delete

    record_delete(user=ext.user, record_id=gone.pk)
    contribution_epoch_close(start=start)
    assert jct_earnings(ext.user) == 0 and not DataReward.objects.exists()


def test_an_accepted_record_counts_in_the_next_epoch_and_its_jct_is_claimed_with_the_api_proof(db, live, epoch):
    start, _ = epoch
    ext = pair(UserFactory())
    link_wallet(ext.user, live.bob.address)
    mine = accept_in(ext, ["how do i configure nginx as a reverse proxy"], start)[0]
    assert mine.status == "accepted"

    contribution_epoch_close(start=start)
    batch = settlement_batch_run()

    reward = 100 * JCT
    assert jct_earnings(ext.user) == reward
    content = json.loads(batch.data.content)
    assert [live.jct.address, live.bob.address, str(reward)] in [leaf[1:] for leaf in leaf_amounts(content)]
    # The DA copy commits to the record without revealing it; the contributor gets the salt from the API.
    section = content["data_contributions"]
    assert section["count"] == 1 and mine.sha256 not in batch.data.content
    client = APIClient()
    client.force_authenticate(ext.user)
    revealed = client.get(f"/api/v1/contributions/records/{mine.pk}/commitment/").json()
    assert revealed["batch_seq"] == batch.seq and revealed["sha256"] == mine.sha256
    assert revealed["salt"] == record_salt(key=batch.commitment_key, record_id=mine.pk)
    assert transaction_commitment(salt=revealed["salt"], fingerprint=mine.sha256) == revealed["commitment"]
    assert section["items"] == [revealed["commitment"]]
    stranger = APIClient()
    stranger.force_authenticate(UserFactory())
    assert stranger.get(f"/api/v1/contributions/records/{mine.pk}/commitment/").status_code == 404

    # The contributor claims the JCT on chain with the API's proof.
    leaf = next(row for row in proof_for(ext.user)["leaves"] if row["currency"] == Currency.JCT)
    before = live.jct.functions.balanceOf(live.bob.address).call()
    live.send(live.bob, claim_call(live.settlement, leaf))
    assert live.jct.functions.balanceOf(live.bob.address).call() - before == reward
