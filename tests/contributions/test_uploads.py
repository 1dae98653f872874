"""Signed uploads: every bad upload is a clear 4xx that stores nothing; duplicates are stored once."""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from rest_framework.test import APIClient

from contributions.models import Content, Device, Record
from contributions.services import device_revoke
from tests.contributions.conftest import pair, record
from tests.factories import UserFactory


def nothing_stored(ext, *, counter: int = 0) -> bool:
    ext.device.refresh_from_db()
    return not Record.objects.exists() and not Content.objects.exists() and ext.device.last_counter == counter


def test_a_signed_batch_is_stored_content_addressed_with_its_consent(ext):
    response = ext.upload([record("rust borrow checker explained"), record("best hiking boots 2026")])

    assert response.status_code == 201, response.json()
    items = response.json()["items"]
    assert [item["status"] for item in items] == ["pending", "pending"]
    stored = Record.objects.get(pk=items[0]["id"])
    assert stored.sha256 == items[0]["sha256"]
    assert Content.objects.get(sha256=stored.sha256).text == "rust borrow checker explained"
    assert stored.consent_terms_version == "2026-12-01" and stored.consent_at is not None
    assert stored.user == ext.user and stored.bands.count() == 16
    ext.device.refresh_from_db()
    assert ext.device.last_counter == 1


def test_a_forged_signature_is_refused_and_nothing_stored(ext):
    body = ext.body([record("weather in lisbon")])
    response = ext.post(body, signature=ext.sign(body, key=Ed25519PrivateKey.generate()))
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    assert nothing_stored(ext)


def test_a_signature_of_another_body_is_refused(ext):
    signed = ext.body([record("weather in lisbon")], counter=5)
    tampered = ext.body([record("weather in porto")], counter=5)
    response = ext.post(tampered, signature=ext.sign(signed))
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    assert nothing_stored(ext)


@pytest.mark.parametrize("signature", ["", "not base64!", base64.b64encode(b"x" * 64).decode()])
def test_a_missing_or_garbled_signature_is_refused(ext, signature):
    response = ext.post(ext.body([record("weather in lisbon")]), signature=signature)
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    assert nothing_stored(ext)


def test_a_replayed_or_lower_counter_is_refused(ext):
    body = ext.body([record("first query")], counter=7)
    assert ext.post(body).status_code == 201
    replay = ext.post(body)
    assert replay.status_code == 409 and replay.json()["code"] == "replayed_counter"
    lower = ext.upload([record("second query")], counter=6)
    assert lower.status_code == 409 and lower.json()["detail"] == {"last_counter": 7}
    assert Record.objects.count() == 1


def test_a_revoked_device_is_refused(ext):
    device_revoke(user=ext.user, device_id=ext.device.pk)
    response = ext.upload([record("weather in lisbon")])
    assert response.status_code == 403 and response.json()["code"] == "device_revoked"
    assert not Record.objects.exists()


def test_a_suspended_users_device_is_refused_until_the_suspension_is_lifted(ext):
    type(ext.user).objects.filter(pk=ext.user.pk).update(is_active=False)  # what the admin's suspend action sets
    response = ext.upload([record("weather in lisbon")])
    assert response.status_code == 403 and "suspended" in response.json()["message"]
    assert not Record.objects.exists()
    type(ext.user).objects.filter(pk=ext.user.pk).update(is_active=True)
    assert ext.upload([record("weather in lisbon")], counter=2).status_code == 201


def test_an_unknown_device_is_refused(ext):
    response = ext.upload([record("weather in lisbon")], device_id=ext.device.pk + 1000)
    assert response.status_code == 401 and response.json()["code"] == "unknown_device"


def test_another_users_device_cannot_be_revoked_through_the_api(ext, other_ext):
    client = APIClient()
    client.force_authenticate(other_ext.user)
    assert client.post(f"/api/v1/contributions/devices/{ext.device.pk}/revoke/").status_code == 404
    ext.device.refresh_from_db()
    assert ext.device.revoked_at is None


def test_an_oversized_record_is_refused_and_nothing_of_the_batch_stored(ext, settings):
    settings.CONTRIBUTIONS_MAX_RECORD_BYTES = 100
    response = ext.upload([record("fine"), record("é" * 51)])
    assert response.status_code == 413
    assert response.json()["detail"] == {"index": 1, "max_bytes": 100}
    assert nothing_stored(ext)


def test_too_many_records_in_a_batch_are_refused(ext, settings):
    settings.CONTRIBUTIONS_MAX_BATCH_RECORDS = 2
    response = ext.upload([record(f"query number {i}") for i in range(3)])
    assert response.status_code == 400 and response.json()["detail"] == {"max_records": 2}
    assert nothing_stored(ext)


def test_a_body_over_the_request_limit_is_refused_before_parsing(ext, settings):
    settings.JANCTION_MAX_BODY_BYTES = 1000
    response = ext.upload([record("x" * 2000)])
    assert response.status_code == 413
    assert nothing_stored(ext)


@pytest.mark.parametrize(
    ("records", "code"),
    [
        ("not a list", "malformed_upload"),
        ([], "malformed_upload"),
        (["a string"], "malformed_upload"),
        ([{**record("q"), "kind": "password"}], "malformed_upload"),
        ([{**record("q"), "source": "Not A Slug!"}], "malformed_upload"),
        ([{**record("q"), "content": ""}], "malformed_upload"),
        ([{**record("q"), "content": 5}], "malformed_upload"),
        ([{**record("q"), "captured_at": "yesterday"}], "malformed_upload"),
        ([{**record("q"), "captured_at": "2026-01-01T00:00:00"}], "malformed_upload"),  # no time zone
        ([{**record("q"), "captured_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}], "malformed_upload"),
        ([{**record("q"), "captured_at": (datetime.now(UTC) - timedelta(days=31)).isoformat()}], "malformed_upload"),
        ([{**record("q"), "metadata": {"nested": {"a": 1}}}], "malformed_upload"),
        ([{**record("q"), "metadata": ["x"]}], "malformed_upload"),
        ([{**record("q"), "quotes_others": "yes"}], "malformed_upload"),
        ([{**record("q"), "extra": 1}], "malformed_upload"),
    ],
)
def test_malformed_records_are_refused_and_nothing_stored(ext, records, code):
    response = ext.upload(records)
    assert response.status_code == 400 and response.json()["code"] == code, response.json()
    assert response.json()["message"]
    assert nothing_stored(ext)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"device_id": 1}', b"\xff\xfe"],
)
def test_a_malformed_body_is_refused(ext, body):
    response = ext.post(body)
    assert response.status_code in (400, 401), response.content
    assert nothing_stored(ext)


def test_non_integer_counters_are_refused(ext):
    for counter in (0, -1, True, "5", 2**63):
        response = ext.upload([record("q q q")], counter=counter)
        assert response.status_code == 400, counter
    assert nothing_stored(ext)


def test_an_outdated_consent_is_refused(ext):
    body = ext.body([record("weather in lisbon")], consent={"terms_version": "2020-01-01", "accepted_at": "x"})
    response = ext.post(body)
    assert response.status_code == 400 and response.json()["code"] == "consent_outdated"
    assert nothing_stored(ext)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ("mail me at jane.doe@example.com please", ["email"]),
        ("call +44 20 7946 0958 tonight", ["phone"]),
        ("card 4111 1111 1111 1111 expired", ["card"]),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", ["token"]),
        ("see https://example.com/cb?code=abc123&state=x", ["url_secret"]),
    ],
)
def test_private_data_left_after_redaction_is_refused(ext, content, found):
    response = ext.upload([record("a clean query"), record(content)])
    assert response.status_code == 422 and response.json()["code"] == "private_data_left"
    assert response.json()["detail"] == {"index": 1, "found": found}
    assert nothing_stored(ext)


def test_an_email_in_metadata_is_refused_too(ext):
    response = ext.upload([record("a clean query", metadata={"page": "from bob@example.org"})])
    assert response.status_code == 422
    assert nothing_stored(ext)


def test_a_duplicate_is_stored_once_in_a_batch_across_batches_and_across_users(ext, other_ext):
    first = ext.upload([record("how to bake sourdough"), record("how to bake sourdough")]).json()["items"]
    again = ext.upload([record("how to bake sourdough")]).json()["items"]
    theirs = other_ext.upload([record("how to bake sourdough")])

    assert [item["status"] for item in first] == ["pending", "duplicate"]
    assert again[0]["status"] == "duplicate"
    assert theirs.status_code == 201 and theirs.json()["items"][0]["status"] == "duplicate"
    assert Record.objects.count() == 1 and Content.objects.count() == 1
    assert Record.objects.get().user == ext.user


def test_social_posts_are_marked_as_quoting_others(ext):
    item = ext.upload([record("great thread by someone", kind="social_post")]).json()["items"][0]
    assert Record.objects.get(pk=item["id"]).quotes_others is True


def test_a_device_stores_at_most_its_cap_per_epoch(ext, settings):
    settings.CONTRIBUTIONS_MAX_UPLOADS_PER_DEVICE_EPOCH = 3
    assert ext.upload([record(f"query {i} words") for i in range(2)]).status_code == 201
    response = ext.upload([record(f"another query {i}") for i in range(2)])
    assert response.status_code == 429 and response.json()["code"] == "upload_cap_reached"
    assert Record.objects.count() == 2


def test_pairing_needs_a_signed_in_user_and_an_explicit_approval(client, db):
    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    params = {"public_key": base64.b64encode(key).decode(), "algorithm": "Ed25519", "name": "My Chromium"}
    assert client.get("/contributions/pair/", params).status_code == 302  # to the login page
    user = UserFactory()
    client.force_login(user)
    page = client.get("/contributions/pair/", params)
    assert page.status_code == 200 and b"Approve this device" in page.content
    assert not Device.objects.exists()  # showing the page pairs nothing
    status = APIClient().get("/api/v1/contributions/devices/status/", {"public_key": params["public_key"]}).json()
    assert status == {"paired": False, "revoked": False, "device_id": None}

    assert client.post("/contributions/pair/", params).status_code == 302
    device = Device.objects.get()
    assert device.user == user and device.name == "My Chromium"
    status = APIClient().get("/api/v1/contributions/devices/status/", {"public_key": params["public_key"]}).json()
    assert status == {"paired": True, "revoked": False, "device_id": device.pk}

    # The same key cannot be paired by someone else, nor again after revoking.
    intruder = UserFactory()
    client.force_login(intruder)
    client.post("/contributions/pair/", params)
    device_revoke(user=user, device_id=device.pk)
    client.force_login(user)
    client.post("/contributions/pair/", params)
    assert Device.objects.count() == 1 and Device.objects.get().revoked_at is not None


def test_a_contributor_lists_and_revokes_devices_on_the_site(ext, client):
    client.force_login(ext.user)
    page = client.get("/contributions/")
    assert ext.device.fingerprint.encode() in page.content
    client.post(f"/contributions/devices/{ext.device.pk}/revoke/")
    ext.device.refresh_from_db()
    assert ext.device.revoked_at is not None and ext.device.revoked_at <= timezone.now()


def test_a_bad_key_cannot_be_paired(db):
    from contributions.errors import InvalidKey
    from contributions.services import device_pair

    user = UserFactory()
    for algorithm, key in [("Ed25519", "AAAA"), ("RSA", base64.b64encode(b"k" * 32).decode()), ("ECDSA-P256", "x")]:
        with pytest.raises(InvalidKey):
            device_pair(user=user, algorithm=algorithm, public_key=key, name="x")
    assert pair(user).device.algorithm == "Ed25519"


def test_pairing_cannot_be_forged_by_another_site_without_the_csrf_token(db):
    from django.test import Client

    key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory())
    params = {"public_key": base64.b64encode(key).decode(), "algorithm": "Ed25519", "name": "forged"}
    assert client.post("/contributions/pair/", params).status_code == 403
    assert not Device.objects.exists()
