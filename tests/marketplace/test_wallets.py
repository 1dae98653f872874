"""SIWE wallet linking: a valid signature, a wrong signer, a reused nonce, an expired nonce, taken addresses."""

from datetime import timedelta

import pytest
from django.utils import timezone
from eth_account import Account
from eth_account.messages import encode_defunct

from ledger.models import SiweNonce, Wallet

pytestmark = pytest.mark.django_db


@pytest.fixture
def key():
    return Account.create()


def challenge(client, address):
    response = client.post("/api/v1/wallets/challenge/", {"address": address}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def sign(account, message):
    return account.sign_message(encode_defunct(text=message)).signature.to_0x_hex()


def link(client, message, signature):
    return client.post("/api/v1/wallets/", {"message": message, "signature": signature}, format="json")


def test_valid_signature_links_the_wallet(owner_client, owner, key):
    message = challenge(owner_client, key.address)["message"]
    assert "wants you to sign in with your Ethereum account" in message
    response = link(owner_client, message, sign(key, message))
    assert response.status_code == 201, response.json()
    assert response.json()["address"] == key.address
    assert owner_client.get("/api/v1/wallets/").json()[0]["address"] == key.address
    assert SiweNonce.objects.get().used_at is not None


def test_signature_by_a_different_key_is_refused(owner_client, key):
    message = challenge(owner_client, key.address)["message"]
    response = link(owner_client, message, sign(Account.create(), message))
    assert response.status_code == 400
    assert response.json()["code"] == "wallet_verification_failed"
    assert f"not by {key.address}" in response.json()["message"]
    assert not Wallet.objects.exists()


def test_reused_nonce_is_refused(owner_client, key):
    message = challenge(owner_client, key.address)["message"]
    assert link(owner_client, message, sign(key, message)).status_code == 201
    Wallet.objects.all().delete()
    response = link(owner_client, message, sign(key, message))
    assert response.status_code == 400
    assert response.json()["code"] == "siwe_nonce_invalid"
    assert "already used" in response.json()["message"]
    assert not Wallet.objects.exists()


def test_expired_nonce_is_refused(owner_client, key):
    message = challenge(owner_client, key.address)["message"]
    SiweNonce.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = link(owner_client, message, sign(key, message))
    assert response.status_code == 400
    assert "expired" in response.json()["message"]
    assert not Wallet.objects.exists()


def test_nonce_expires_after_ten_minutes(owner_client, key):
    issued = timezone.now()
    challenge(owner_client, key.address)
    ttl = SiweNonce.objects.get().expires_at - issued
    assert timedelta(minutes=9, seconds=59) < ttl <= timedelta(minutes=10, seconds=1)


def test_another_users_nonce_cannot_be_used(owner_client, other_client, key):
    message = challenge(owner_client, key.address)["message"]
    response = link(other_client, message, sign(key, message))
    assert response.status_code == 400
    assert "not issued to you" in response.json()["message"]
    assert not Wallet.objects.exists()


def test_one_address_belongs_to_one_user(owner_client, other_client, key):
    message = challenge(owner_client, key.address)["message"]
    link(owner_client, message, sign(key, message))
    message = challenge(other_client, key.address)["message"]
    response = link(other_client, message, sign(key, message))
    assert response.status_code == 409
    assert response.json()["code"] == "wallet_already_linked"
    assert Wallet.objects.count() == 1


def test_tampered_message_is_refused(owner_client, key):
    message = challenge(owner_client, key.address)["message"]
    tampered = message.replace("Chain ID: 31337", "Chain ID: 1")
    response = link(owner_client, tampered, sign(key, tampered))
    assert response.status_code == 400
    assert "chain id" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        ({"message": "hello", "signature": "0x00"}, "not an EIP-4361"),
        ({"signature": "0x00"}, "required"),
    ],
)
def test_malformed_link_requests_are_400(owner_client, body, hint):
    response = owner_client.post("/api/v1/wallets/", body, format="json")
    assert response.status_code == 400
    assert hint in str(response.json())


def test_malformed_signature_is_400(owner_client, key):
    message = challenge(owner_client, key.address)["message"]
    response = link(owner_client, message, "0xdeadbeef")
    assert response.status_code == 400
    assert "malformed" in response.json()["message"]
    assert SiweNonce.objects.get().used_at is None


def test_bad_address_for_a_challenge_is_400(owner_client):
    response = owner_client.post("/api/v1/wallets/challenge/", {"address": "0x123"}, format="json")
    assert response.status_code == 400
    assert "not an Ethereum address" in response.json()["message"]


def test_anonymous_caller_cannot_link_or_list(anon_client, key):
    assert anon_client.post("/api/v1/wallets/challenge/", {"address": key.address}, format="json").status_code in (
        401,
        403,
    )
    assert anon_client.get("/api/v1/wallets/").status_code in (401, 403)


def test_another_user_cannot_unlink_the_wallet(owner_client, other_client, key):
    message = challenge(owner_client, key.address)["message"]
    wallet_id = link(owner_client, message, sign(key, message)).json()["id"]
    assert other_client.get("/api/v1/wallets/").json() == []
    assert other_client.delete(f"/api/v1/wallets/{wallet_id}/").status_code == 404
    assert owner_client.delete(f"/api/v1/wallets/{wallet_id}/").status_code == 204
    assert not Wallet.objects.exists()
