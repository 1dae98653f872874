"""Item 11a of the hardening issue: one Idempotency-Key creates one rental, even when the server dies mid-request."""

import uuid

import pytest
import requests

from ledger.models import IdempotencyRecord, Transaction, TransactionKind
from ledger.services import ledger_deposit
from marketplace.rentals.models import Rental
from marketplace.services import api_key_create
from tests.factories import UserFactory, online_node
from tests.hardening.server import daphne_server

RENTAL = {
    "pool": "ada-12g",
    "vgpus": 1,
    "max_price_per_hour": "1.00",
    "max_duration_seconds": 600,
    "image": "docker.io/library/busybox:latest",
    "command": ["sh", "-c", "echo hi"],
}


@pytest.mark.slow
def test_a_retry_after_the_server_died_between_commit_and_response_returns_the_first_rental(transactional_db, tmp_path):
    provider, buyer = UserFactory(), UserFactory()
    online_node(provider, name="rig", vgpus=2, price=500_000)
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=100_000_000, idempotency_key="crash-test-fund")
    _, raw_key = api_key_create(user=buyer, name="retrying client")
    headers = {"Authorization": f"Bearer {raw_key}", "Idempotency-Key": str(uuid.uuid4())}
    log = tmp_path / "daphne.log"

    with daphne_server(log, {"JANCTION_TEST_EXIT_AFTER_IDEMPOTENT_COMMIT": "1"}) as (base, process):
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{base}/api/v1/rentals/", json=RENTAL, headers=headers, timeout=60)
        assert process.wait(timeout=30) == 70  # it died at the hook, after the commit
    # The effect and the record committed together.
    assert Rental.objects.filter(owner=buyer).count() == 1
    assert IdempotencyRecord.objects.get(user=buyer).state == IdempotencyRecord.State.COMPLETED

    with daphne_server(log) as (base, _):
        retry = requests.post(f"{base}/api/v1/rentals/", json=RENTAL, headers=headers, timeout=60)
        again = requests.post(f"{base}/api/v1/rentals/", json=RENTAL, headers=headers, timeout=60)

    first = Rental.objects.get(owner=buyer)
    for response in (retry, again):
        assert response.status_code == 201, response.text
        assert response.headers["Idempotent-Replayed"] == "true"
        assert response.json()["id"] == first.pk
    assert Rental.objects.filter(owner=buyer).count() == 1
    holds = Transaction.objects.filter(kind=TransactionKind.HOLD, idempotency_key__startswith="rental:")
    assert holds.count() == 1


@pytest.mark.django_db
def test_a_refused_request_is_recorded_without_any_effect(owner, owner_client):
    """A 4xx is replayed too, and the savepoint around the view leaves nothing of a half-done request."""
    online_node(owner, name="rig", vgpus=2, price=500_000)
    key = str(uuid.uuid4())
    for _ in range(2):  # the buyer has no funds: 402, the same twice, no rental, no hold
        response = owner_client.post("/api/v1/rentals/", RENTAL, format="json", HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 402
        assert "escrow" in response.json()["message"]
    assert response["Idempotent-Replayed"] == "true"
    assert not Rental.objects.exists()
    assert not Transaction.objects.filter(kind=TransactionKind.HOLD).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_rentals_with_one_key_create_one_rental():
    """Six threads send the same rental with the same key at once: one rental, one hold, the rest 409 or replay."""
    import threading

    from django.db import connections
    from rest_framework.test import APIClient

    provider, buyer = UserFactory(), UserFactory()
    online_node(provider, name="rig", vgpus=2, price=500_000)
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=100_000_000, idempotency_key="race-fund")
    key = str(uuid.uuid4())
    barrier = threading.Barrier(6)
    results = []

    def send():
        client = APIClient()
        client.force_authenticate(buyer)
        barrier.wait()
        try:
            response = client.post("/api/v1/rentals/", RENTAL, format="json", HTTP_IDEMPOTENCY_KEY=key)
            results.append((response.status_code, response.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 6
    assert {code for code, _ in results} <= {201, 409}
    assert {body["id"] for code, body in results if code == 201} == {Rental.objects.get(owner=buyer).pk}
    assert Transaction.objects.filter(kind=TransactionKind.HOLD).count() == 1
