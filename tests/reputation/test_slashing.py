"""An operator slashes part of a provider's stake after an upheld dispute: the service, the admin, the attacks."""

import threading

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connections
from django.test import Client

from ledger.models import Account, StakeEvent, Wallet
from ledger.services import ledger_deposit
from ledger.staking import stake_add, unstake_request
from marketplace.models import Dispute, StakeSlash
from marketplace.rentals.disputes import dispute_open, dispute_resolve
from marketplace.rentals.slashing import SlashingUnavailable, SlashInvalid, SlashNotAllowed, stake_slash_for_dispute
from reputation.models import Evidence, EvidenceKind
from tests.factories import UserFactory
from tests.reputation.test_disputes import _ended_rental

JCT = 10**18


def _jct(user, kind: str) -> int:
    account = Account.objects.filter(owner=user, kind=kind, currency="JCT").first()
    return int(account.balance) if account else 0


def _dispute(outcome: str | None = "refund", staked_jct: int = 100) -> tuple[Dispute, object]:
    rental = _ended_rental()
    provider = rental.placements.get().provider
    ledger_deposit(user_id=provider.pk, currency="JCT", amount=staked_jct * JCT, idempotency_key=f"j{provider.pk}")
    stake_add(user_id=provider.pk, amount=staked_jct * JCT, idempotency_key="s")
    dispute = dispute_open(owner=rental.owner, rental_id=rental.pk, reason="it never ran")
    if outcome:
        refund = 1 if outcome == "partial" else None
        dispute_resolve(dispute_id=dispute.pk, outcome=outcome, operator=None, refund=refund)
    dispute.refresh_from_db()
    return dispute, provider


def _slash(dispute, provider, amount, evidence="logs show the node faked the run"):
    return stake_slash_for_dispute(
        dispute_id=dispute.pk, provider_id=provider.pk, amount=amount, evidence=evidence, operator=None
    )


@pytest.mark.django_db
@pytest.mark.parametrize("outcome", ["refund", "partial"])
def test_a_slash_after_an_upheld_dispute_moves_the_stake_once_and_is_recorded_as_evidence(outcome):
    dispute, provider = _dispute(outcome)
    result = _slash(dispute, provider, 30 * JCT)
    assert result.created and result.slash.mode == "ledger"
    assert _jct(provider, "stake") == 70 * JCT
    assert int(Account.objects.get(owner__isnull=True, kind="slashed", currency="JCT").balance) == 30 * JCT
    evidence = Evidence.objects.get(kind=EvidenceKind.STAKE_SLASHED)
    assert evidence.user_id == provider.pk and "30 JCT slashed" in evidence.detail
    assert "faked the run" in evidence.detail
    again = _slash(dispute, provider, 30 * JCT)  # the same slash again: nothing moves
    assert not again.created and again.slash == result.slash and _jct(provider, "stake") == 70 * JCT
    with pytest.raises(SlashNotAllowed) as other:
        _slash(dispute, provider, 10 * JCT)
    assert other.value.code == "slash_exists"
    assert StakeSlash.objects.count() == 1 and Evidence.objects.filter(kind=EvidenceKind.STAKE_SLASHED).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("outcome", ["reject", None])
def test_a_slash_on_a_rejected_or_open_dispute_is_refused_and_stores_nothing(outcome):
    dispute, provider = _dispute(outcome)
    with pytest.raises(SlashNotAllowed) as refused:
        _slash(dispute, provider, 1 * JCT)
    assert refused.value.code == "dispute_not_upheld" and refused.value.status == 409
    assert not StakeSlash.objects.exists() and _jct(provider, "stake") == 100 * JCT
    assert not Evidence.objects.filter(kind=EvidenceKind.STAKE_SLASHED).exists()


@pytest.mark.django_db
def test_a_slash_above_the_stake_is_refused_and_stores_nothing_but_reaches_stake_in_its_cool_down():
    dispute, provider = _dispute(staked_jct=50)
    unstake_request(user_id=provider.pk, amount=20 * JCT, idempotency_key="run")  # trying to get away
    with pytest.raises(Exception) as refused:
        _slash(dispute, provider, 50 * JCT + 1)
    assert refused.value.code == "stake_insufficient" and refused.value.status == 409
    assert not StakeSlash.objects.exists() and not Evidence.objects.filter(kind=EvidenceKind.STAKE_SLASHED).exists()
    _slash(dispute, provider, 50 * JCT)  # the whole stake, the unstaking part included
    assert (_jct(provider, "stake"), _jct(provider, "unstaking")) == (0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "evidence", "field"),
    [(0, "x", "amount"), (-1, "x", "amount"), (1.5, "x", "amount"), (True, "x", "amount"), (1, "", "evidence"),
     (1, "   ", "evidence"), (1, "x" * 2001, "evidence"), (1, None, "evidence")],
)  # fmt: skip
def test_a_bad_amount_or_missing_evidence_is_a_400_naming_it(amount, evidence, field):
    dispute, provider = _dispute()
    with pytest.raises(SlashInvalid) as refused:
        _slash(dispute, provider, amount, evidence=evidence)
    assert refused.value.detail == {"field": field} and not StakeSlash.objects.exists()


@pytest.mark.django_db
def test_only_a_provider_of_the_disputed_rental_can_be_slashed_for_it():
    dispute, _ = _dispute()
    bystander = UserFactory()
    ledger_deposit(user_id=bystander.pk, currency="JCT", amount=10 * JCT, idempotency_key="b")
    stake_add(user_id=bystander.pk, amount=10 * JCT, idempotency_key="b")
    with pytest.raises(SlashInvalid) as refused:
        _slash(dispute, bystander, 1 * JCT)
    assert refused.value.detail == {"field": "provider"} and _jct(bystander, "stake") == 10 * JCT


@pytest.mark.django_db(transaction=True)
def test_two_operators_slashing_at_once_slash_once():
    dispute, provider = _dispute()
    barrier, outcomes = threading.Barrier(2), []

    def slash():
        try:
            barrier.wait()
            outcomes.append(_slash(dispute, provider, 40 * JCT).created)
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=slash) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == [False, True]
    assert _jct(provider, "stake") == 60 * JCT and StakeSlash.objects.count() == 1


@pytest.mark.django_db
def test_the_operator_slashes_from_the_dispute_admin_and_the_action_is_a_log_entry(admin_user):
    dispute, provider = _dispute()
    client = Client()
    client.force_login(admin_user)
    url = f"/admin/marketplace/dispute/{dispute.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200 and "slash_jct" in page.content.decode()
    form = {"outcome": "", "slash_provider": str(provider.pk), "slash_jct": "12.5", "slash_evidence": "faked logs"}
    response = client.post(url, form, follow=True)
    assert response.status_code == 200
    assert _jct(provider, "stake") == 87_500_000_000_000_000_000
    entry = LogEntry.objects.get(object_id=str(dispute.pk), change_message__startswith="Slashed")
    assert entry.user == admin_user and "12.5 JCT" in entry.change_message and "faked logs" in entry.change_message
    too_much = {**form, "slash_jct": "1000"}
    page = client.post(url, too_much, follow=True).content.decode()
    assert "Not slashed" in page and _jct(provider, "stake") == 87_500_000_000_000_000_000
    bad = client.post(url, {**form, "slash_jct": "-3"}).content.decode()
    assert "errorlist" in bad and StakeSlash.objects.count() == 1


@pytest.mark.django_db
def test_in_real_mode_the_slash_goes_to_the_chain_wrapper_and_is_retried_with_the_same_evidence(settings, monkeypatch):
    settings.CHAIN_RPC_URL = "http://127.0.0.1:9"
    dispute, provider = _dispute(staked_jct=1)
    address = "0x" + "cd" * 20
    Wallet.objects.create(user=provider, address=address, chain_id=31337)
    StakeEvent.objects.create(
        chain_id=31337, tx_hash="0x" + "11" * 32, log_index=0, block_number=1, kind="staked", account=address,
        amount=100 * JCT,
    )  # fmt: skip
    with pytest.raises(SlashNotAllowed):
        _slash(dispute, provider, 101 * JCT)  # above the recorded on-chain stake
    calls = []

    def missing(**kwargs):
        calls.append(kwargs)
        raise SlashingUnavailable("no chain")

    monkeypatch.setattr("marketplace.rentals.slashing._slash_onchain", missing)
    with pytest.raises(SlashingUnavailable):
        _slash(dispute, provider, 40 * JCT)
    pending = StakeSlash.objects.get()
    assert pending.mode == "chain" and pending.account == address and pending.tx_hash == ""
    monkeypatch.setattr(
        "marketplace.rentals.slashing._slash_onchain", lambda **kwargs: calls.append(kwargs) or "0x" + "ab" * 32
    )
    result = _slash(dispute, provider, 40 * JCT)  # the retry: same row, same evidence hash
    assert result.slash.tx_hash == "0x" + "ab" * 32 and StakeSlash.objects.count() == 1
    assert calls[0]["evidence"] == calls[1]["evidence"] and len(calls[0]["evidence"]) == 32
    assert calls[1] == {"account": address, "amount": 40 * JCT, "evidence": calls[0]["evidence"]}
    assert _jct(provider, "stake") == 1 * JCT  # the ledger-level stake is not touched in real mode
    assert "on chain" in Evidence.objects.get(kind=EvidenceKind.STAKE_SLASHED).detail


def test_without_the_chain_wrapper_the_real_mode_slash_says_so():
    from marketplace.rentals import slashing

    try:
        import ledger.settlement.stakes  # noqa: F401
    except ImportError:
        with pytest.raises(SlashingUnavailable, match="no on-chain slash yet"):
            slashing._slash_onchain(account="0x" + "00" * 20, amount=1, evidence=b"\0" * 32)
    else:
        assert callable(slashing._slash_onchain)


