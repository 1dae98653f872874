"""API keys: created once, stored hashed, authenticate as Bearer, revocable, private to their owner."""

import hashlib

import pytest
from rest_framework.test import APIClient

from marketplace.models import ApiKey

pytestmark = pytest.mark.django_db


def create_key(client, name="ci"):
    return client.post("/api/v1/api-keys/", {"name": name}, format="json")


def test_anonymous_caller_cannot_list_or_create(anon_client):
    assert anon_client.get("/api/v1/api-keys/").status_code in (401, 403)
    assert create_key(anon_client).status_code in (401, 403)
    assert not ApiKey.objects.exists()


def test_key_is_shown_once_and_stored_hashed(owner_client, owner):
    response = create_key(owner_client)
    assert response.status_code == 201
    raw = response.json()["key"]
    stored = ApiKey.objects.get(user=owner)
    assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(owner_client.get("/api/v1/api-keys/").json())
    assert owner_client.get("/api/v1/api-keys/").json()[0]["prefix"] == stored.prefix


def test_bearer_key_authenticates_and_records_last_use(owner_client, owner):
    raw = create_key(owner_client).json()["key"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get("/api/v1/profile/")
    assert response.status_code == 200
    assert response.json()["email"] == owner.email
    assert ApiKey.objects.get(user=owner).last_used_at is not None


@pytest.mark.parametrize("header", ["Bearer jct_nope_nope", "Bearer ", "Bearer a b"])
def test_unknown_or_malformed_keys_are_401(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/profile/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_revoked_key_stops_working(owner_client):
    created = create_key(owner_client).json()
    assert owner_client.delete(f"/api/v1/api-keys/{created['api_key']['id']}/").json()["revoked_at"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created['key']}")
    assert client.get("/api/v1/profile/").status_code == 401


def test_another_user_can_neither_see_nor_revoke_the_key(owner_client, other_client):
    created = create_key(owner_client).json()
    assert other_client.get("/api/v1/api-keys/").json() == []
    response = other_client.delete(f"/api/v1/api-keys/{created['api_key']['id']}/")
    assert response.status_code == 404
    assert response.json()["code"] == "api_key_not_found"
    assert ApiKey.objects.get().revoked_at is None


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x" * 81}, {"name": ["list"]}])
def test_bad_names_are_400(owner_client, body):
    response = owner_client.post("/api/v1/api-keys/", body, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["detail"]
    assert not ApiKey.objects.exists()


def test_duplicate_active_name_is_409(owner_client):
    create_key(owner_client, "dup")
    response = create_key(owner_client, "dup")
    assert response.status_code == 409
    assert response.json()["code"] == "api_key_name_taken"
    assert ApiKey.objects.count() == 1
