"""Ledger-level JCT stake (the embedded default): stake, unstake with a cool-down, the staking gate, and races."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connections
from django.db.models import Sum
from django.utils import timezone
from rest_framework.test import APIClient

from ledger.errors import InsufficientFunds, InvalidAmount
from ledger.models import Account, Entry, Unstake
from ledger.services import ledger_deposit
from ledger.staking import stake_add, stake_balances, stake_slash, unstake_request, unstakes_release
from pricing.models import Allocation, BidState
from pricing.services import bid_submit, market_round_run
from tests.factories import UserFactory, online_node

JCT = 10**18


def _fund(user, jct: int) -> None:
    ledger_deposit(user_id=user.pk, currency="JCT", amount=jct * JCT, idempotency_key=f"fund-{uuid.uuid4()}")


def _jct(user, kind: str) -> int:
    account = Account.objects.filter(owner=user, kind=kind, currency="JCT").first()
    return int(account.balance) if account else 0


def _post(api, path: str, amount):
    return api.post(path, {"amount": amount}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))


def _books_balance() -> bool:
    return not Entry.objects.filter(currency="JCT").aggregate(total=Sum("amount"))["total"]


@pytest.mark.django_db
def test_stake_unstake_and_release_after_the_cool_down_move_jct_once_each(settings):
    settings.LEDGER_UNSTAKE_COOLDOWN_SECONDS = 3600
    provider = UserFactory()
    _fund(provider, 150)
    assert stake_add(user_id=provider.pk, amount=100 * JCT, idempotency_key="k1") is True
    assert stake_add(user_id=provider.pk, amount=100 * JCT, idempotency_key="k1") is False  # a replay moves nothing
    assert (_jct(provider, "available"), _jct(provider, "stake")) == (50 * JCT, 100 * JCT)
    first = unstake_request(user_id=provider.pk, amount=40 * JCT, idempotency_key="u1")
    assert unstake_request(user_id=provider.pk, amount=40 * JCT, idempotency_key="u1") == first
    assert stake_balances(user_ids=[provider.pk])[provider.pk].staked == 60 * JCT
    assert _jct(provider, "unstaking") == 40 * JCT and Unstake.objects.count() == 1
    assert unstakes_release() == 0  # still cooling down
    assert unstakes_release(now=timezone.now() + timedelta(hours=2)) == 1
    assert unstakes_release(now=timezone.now() + timedelta(hours=2)) == 0
    assert (_jct(provider, "available"), _jct(provider, "unstaking")) == (90 * JCT, 0)
    assert _books_balance()


@pytest.mark.django_db
@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "10"])
def test_stake_amounts_must_be_positive_integers(amount):
    provider = UserFactory()
    with pytest.raises(InvalidAmount):
        stake_add(user_id=provider.pk, amount=amount, idempotency_key="k")
    with pytest.raises(InvalidAmount):
        unstake_request(user_id=provider.pk, amount=amount, idempotency_key="k")


@pytest.mark.django_db
def test_staking_or_unstaking_more_than_held_is_refused_and_stores_nothing():
    provider = UserFactory()
    _fund(provider, 10)
    with pytest.raises(InsufficientFunds):
        stake_add(user_id=provider.pk, amount=11 * JCT, idempotency_key="k")
    stake_add(user_id=provider.pk, amount=10 * JCT, idempotency_key="k2")
    with pytest.raises(InsufficientFunds):
        unstake_request(user_id=provider.pk, amount=11 * JCT, idempotency_key="u")
    assert not Unstake.objects.exists() and _jct(provider, "stake") == 10 * JCT


@pytest.mark.django_db
def test_the_api_stakes_and_unstakes_with_idempotency_keys_and_refuses_bad_amounts_and_real_mode(settings):
    provider = UserFactory()
    _fund(provider, 100)
    api = APIClient()
    api.force_authenticate(provider)
    key = str(uuid.uuid4())
    for _ in range(2):  # the retry replays the first response
        response = api.post("/api/v1/ledger/stake/", {"amount": "60"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 201, response.json()
    assert response.json()["staked"] == "60" and _jct(provider, "stake") == 60 * JCT
    response = api.post(
        "/api/v1/ledger/stake/unstake/", {"amount": "25"}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert response.status_code == 201 and response.json()["unstaking"] == "25"
    assert response.json()["unstakes"][0]["amount"] == "25"
    for bad in ("-1", "abc", 5, "0", "1e3"):
        refused = api.post(
            "/api/v1/ledger/stake/", {"amount": bad}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
        )
        assert refused.status_code == 400, (bad, refused.json())
    too_much = api.post(
        "/api/v1/ledger/stake/", {"amount": "41"}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4())
    )
    assert too_much.status_code == 409 and too_much.json()["code"] == "insufficient_funds"
    settings.CHAIN_RPC_URL = "http://127.0.0.1:9"
    real = api.post("/api/v1/ledger/stake/", {"amount": "1"}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    assert real.status_code == 409 and real.json()["code"] == "stake_on_chain"
    assert api.get("/api/v1/ledger/stake/").json()["mode"] == "chain"
    assert _jct(provider, "stake") == 35 * JCT and _books_balance()


@pytest.mark.django_db
def test_in_the_embedded_default_the_staking_gate_reads_the_ledger_stake(settings):
    settings.REPUTATION_POOL_MIN_STAKE_JCT = "100"
    buyer = UserFactory()
    cheap_unstaked = online_node(UserFactory(), name="unstaked", vgpus=1, price=100_000)
    staked = online_node(UserFactory(), name="staked", vgpus=1, price=500_000)
    _fund(staked.owner, 100)
    stake_add(user_id=staked.owner_id, amount=100 * JCT, idempotency_key="s")
    bid = bid_submit(owner=buyer, pool_name="ada-12g", units=1, max_price_per_hour=2_000_000, reference="r1")
    market_round_run(pool_id=staked.vgpus.first().pool_id)
    assert Allocation.objects.get(bid=bid).node == staked  # the cheaper node's provider staked nothing
    unstake_request(user_id=staked.owner_id, amount=1, idempotency_key="u")  # unstaking does not count
    again = bid_submit(owner=buyer, pool_name="ada-12g", units=1, max_price_per_hour=2_000_000, reference="r2")
    market_round_run(pool_id=cheap_unstaked.vgpus.first().pool_id)
    again.refresh_from_db()
    assert again.state == BidState.PENDING  # 100 JCT less one base unit: below the minimum, nobody enters


def _race(*calls) -> list:
    barrier, outcomes = threading.Barrier(len(calls)), [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            outcomes[index] = call()
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_unstakes_of_most_of_the_stake_cannot_both_pass():
    provider = UserFactory()
    _fund(provider, 100)
    stake_add(user_id=provider.pk, amount=100 * JCT, idempotency_key="s")
    outcomes = _race(
        lambda: unstake_request(user_id=provider.pk, amount=60 * JCT, idempotency_key="a"),
        lambda: unstake_request(user_id=provider.pk, amount=60 * JCT, idempotency_key="b"),
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["InsufficientFunds", "Unstake"]
    assert (_jct(provider, "stake"), _jct(provider, "unstaking")) == (40 * JCT, 60 * JCT)
    assert Unstake.objects.count() == 1 and _books_balance()


@pytest.mark.django_db(transaction=True)
def test_a_stake_and_an_unstake_racing_with_one_key_each_move_exactly_what_they_say():
    provider = UserFactory()
    _fund(provider, 100)
    stake_add(user_id=provider.pk, amount=50 * JCT, idempotency_key="s0")
    outcomes = _race(
        lambda: stake_add(user_id=provider.pk, amount=50 * JCT, idempotency_key="s1"),
        lambda: stake_add(user_id=provider.pk, amount=50 * JCT, idempotency_key="s1"),  # the same request twice
        lambda: unstake_request(user_id=provider.pk, amount=50 * JCT, idempotency_key="u1"),
    )
    assert sorted(o for o in outcomes[:2]) == [False, True] and isinstance(outcomes[2], Unstake)
    assert (_jct(provider, "available"), _jct(provider, "stake"), _jct(provider, "unstaking")) == (
        0,
        50 * JCT,
        50 * JCT,
    )
    assert _books_balance()


@pytest.mark.django_db(transaction=True)
def test_a_slash_racing_an_unstake_takes_what_is_left_wherever_it_is_and_never_more():
    provider = UserFactory()
    _fund(provider, 100)
    stake_add(user_id=provider.pk, amount=100 * JCT, idempotency_key="s")
    outcomes = _race(
        lambda: unstake_request(user_id=provider.pk, amount=100 * JCT, idempotency_key="u"),
        lambda: stake_slash(user_id=provider.pk, amount=80 * JCT, idempotency_key="x"),
    )
    assert outcomes[1] is True  # the slash always passes: it reaches the stake in its cool-down too
    assert isinstance(outcomes[0], (Unstake, InsufficientFunds))  # the unstake fails only if the slash came first
    stake, unstaking = _jct(provider, "stake"), _jct(provider, "unstaking")
    assert stake + unstaking == 20 * JCT
    for unstake in Unstake.objects.all():
        assert int(unstake.amount) - int(unstake.slashed) == unstaking  # what the request will give back
    slashed = Account.objects.get(owner__isnull=True, kind="slashed", currency="JCT")
    assert int(slashed.balance) == 80 * JCT and _books_balance()
    with pytest.raises(InsufficientFunds) as refused:
        stake_slash(user_id=provider.pk, amount=20 * JCT + 1, idempotency_key="y")
    assert refused.value.code == "stake_insufficient"
    assert unstakes_release(now=timezone.now() + timedelta(days=30)) == Unstake.objects.count()
    assert _jct(provider, "available") == unstaking and _books_balance()


@pytest.mark.django_db
def test_the_stake_page_in_the_embedded_default_stakes_and_unstakes_ledger_jct_once_per_form(client, settings):
    """Found at merge time: the page showed only the on-chain stake (none on the demo chain) and told a provider
    whose ledger-level stake met the pool's minimum (what the gate reads) that its nodes were not listed."""
    settings.REPUTATION_POOL_MIN_STAKE_JCT = "50"
    provider = UserFactory()
    online_node(provider, name="rig", vgpus=1, price=100_000)
    _fund(provider, 150)
    client.force_login(provider)
    page = client.get("/stake/")
    assert page.status_code == 200 and b"ledger-level stake" in page.content
    assert b"below it" in page.content  # nothing staked yet
    token = page.context["ledger_stake"]["form_token"]
    for _ in range(2):  # a resubmitted form moves nothing more
        response = client.post("/stake/ledger/", {"action": "stake", "amount": "100", "form_token": token})
        assert response.status_code == 302
    assert (_jct(provider, "available"), _jct(provider, "stake")) == (50 * JCT, 100 * JCT)
    page = client.get("/stake/")
    assert b"meets it" in page.content and b"below it" not in page.content
    unstake = page.context["ledger_stake"]["form_token"]
    client.post("/stake/ledger/", {"action": "unstake", "amount": "30", "form_token": unstake})
    assert (_jct(provider, "stake"), _jct(provider, "unstaking")) == (70 * JCT, 30 * JCT)
    assert client.get("/stake/").context["ledger_stake"]["unstakes"][0]["amount"] == "30"
    # Bad input: a clear message, nothing moved.
    for bad in ({"action": "stake", "amount": "-1"}, {"action": "stake", "amount": "1e9"}, {"action": "burn"}):
        response = client.post("/stake/ledger/", {**bad, "form_token": uuid.uuid4().hex}, follow=True)
        assert response.status_code == 200
        assert any(m.level_tag == "error" for m in response.context["messages"])
    too_much = client.post("/stake/ledger/", {"action": "stake", "amount": "51", "form_token": "t2"}, follow=True)
    assert "Amount:" in next(str(m) for m in too_much.context["messages"])
    assert (_jct(provider, "available"), _jct(provider, "stake"), _jct(provider, "unstaking")) == (
        50 * JCT,
        70 * JCT,
        30 * JCT,
    )
    settings.CHAIN_RPC_URL = "http://127.0.0.1:9"  # real mode: stake on chain from the wallet, not here
    assert client.post("/stake/ledger/", {"action": "stake", "amount": "1", "form_token": "t3"}).status_code == 404
