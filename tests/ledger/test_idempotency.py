"""The Idempotency-Key header: replays, reuse with another body, and concurrent duplicates."""

import threading
import uuid

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from ledger.models import IdempotencyRecord, Transaction
from tests.factories import UserFactory

URL = "/api/v1/ledger/faucet/"
BODY = {"currency": "USDC", "amount": "10"}


def post(client, body, key):
    return client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_missing_or_malformed_key_is_refused(owner_client, embedded):
    assert owner_client.post(URL, BODY, format="json").json()["code"] == "idempotency_key_required"
    response = post(owner_client, BODY, "short")
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["message"]
    assert not Transaction.objects.exists()


@pytest.mark.django_db
def test_replay_with_same_key_and_body_returns_the_first_response(owner_client, owner, embedded):
    key = str(uuid.uuid4())
    first = post(owner_client, BODY, key)
    second = post(owner_client, BODY, key)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Transaction.objects.count() == 1
    assert owner.ledger_accounts.get(kind="available", currency="USDC").balance == 10_000_000


@pytest.mark.django_db
def test_same_key_with_another_body_is_422(owner_client, embedded):
    key = str(uuid.uuid4())
    post(owner_client, BODY, key)
    response = post(owner_client, {"currency": "USDC", "amount": "11"}, key)
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Transaction.objects.count() == 1


@pytest.mark.django_db
def test_keys_are_per_user(owner_client, other_client, embedded):
    key = str(uuid.uuid4())
    assert post(owner_client, BODY, key).status_code == 201
    assert post(other_client, BODY, key).status_code == 201
    assert Transaction.objects.count() == 2


@pytest.mark.django_db
def test_duplicate_while_the_first_is_in_flight_is_409(owner_client, owner, embedded):
    key = str(uuid.uuid4())
    first = post(owner_client, BODY, key)
    # Put the record back in flight, as while the first request is still running.
    IdempotencyRecord.objects.filter(user=owner, key=key).update(state=IdempotencyRecord.State.IN_FLIGHT)
    response = post(owner_client, BODY, key)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_request_in_flight"
    assert first.status_code == 201
    assert Transaction.objects.count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs concurrent connections")
@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_post_exactly_once(embedded):
    user = UserFactory()
    key = str(uuid.uuid4())
    results = []
    barrier = threading.Barrier(6)

    def send():
        client = APIClient()
        client.force_authenticate(user)
        barrier.wait()
        try:
            response = post(client, BODY, key)
            results.append((response.status_code, response.json()))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    codes = sorted(code for code, _ in results)
    assert len(codes) == 6
    assert set(codes) <= {201, 409}
    assert 201 in codes
    bodies = {body["transaction"] for code, body in results if code == 201}
    assert len(bodies) == 1  # every success is the same transaction (first response or its replay)
    assert Transaction.objects.count() == 1
    assert user.ledger_accounts.get(kind="available", currency="USDC").balance == 10_000_000


@pytest.mark.django_db
def test_completed_records_past_their_retention_are_purged(owner_client, owner, embedded, settings):
    from datetime import timedelta

    from django.utils import timezone

    from ledger.tasks import idempotency_records_purge_task

    settings.JANCTION_IDEMPOTENCY_TTL_HOURS = 24
    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    post(owner_client, BODY, old)
    post(owner_client, BODY, fresh)
    IdempotencyRecord.objects.filter(key=old).update(completed_at=timezone.now() - timedelta(hours=25))
    IdempotencyRecord.objects.create(user=owner, key="in-flight-key", method="POST", path=URL, request_hash="x")
    assert idempotency_records_purge_task.apply().get() == 1
    assert set(IdempotencyRecord.objects.values_list("key", flat=True)) == {fresh, "in-flight-key"}
