"""Optional EIP-191 co-signatures by a linked wallet: a good one is stored on the records; a bad one stores nothing."""

import hashlib

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from rest_framework.test import APIClient

from contributions.cosigning import COSIGN_PREFIX, cosign_message
from contributions.models import Content, Record
from ledger.models import Wallet
from ledger.wallets import wallet_challenge_create, wallet_link, wallet_unlink
from tests.contributions.conftest import UPLOAD_URL, record


def link(user, account) -> Wallet:
    """Link ``account`` to ``user`` the real way: a SIWE challenge signed by the wallet."""
    challenge = wallet_challenge_create(user=user, address=account.address)
    signed = Account.sign_message(encode_defunct(text=challenge.message), private_key=account.key)
    return wallet_link(user=user, message=challenge.message, signature=signed.signature.hex())


def cosign(body: bytes, account) -> str:
    signed = Account.sign_message(encode_defunct(text=cosign_message(body)), private_key=account.key)
    return "0x" + signed.signature.hex().removeprefix("0x")


def post(ext, body: bytes, *, wallet: str | None, wallet_signature: str | None):
    headers = {"HTTP_X_JANCTION_SIGNATURE": ext.sign(body)}
    if wallet is not None:
        headers["HTTP_X_JANCTION_WALLET"] = wallet
    if wallet_signature is not None:
        headers["HTTP_X_JANCTION_WALLET_SIGNATURE"] = wallet_signature
    return APIClient().post(UPLOAD_URL, data=body, content_type="application/json", **headers)


def nothing_stored(ext) -> bool:
    ext.device.refresh_from_db()
    return not Record.objects.exists() and not Content.objects.exists() and ext.device.last_counter == 0


@pytest.fixture
def wallet(ext):
    account = Account.create()
    link(ext.user, account)
    return account


def test_the_message_binds_the_exact_body():
    body = b'{"device_id": 1, "counter": 2}'
    assert cosign_message(body) == COSIGN_PREFIX + hashlib.sha256(body).hexdigest()


def test_a_batch_co_signed_by_a_linked_wallet_stores_the_wallet_on_its_records(ext, wallet, client):
    body = ext.body([record("rust borrow checker explained"), record("best hiking boots 2026")])
    # The address in any case: the server answers with and stores the EIP-55 form.
    response = post(ext, body, wallet=wallet.address.lower(), wallet_signature=cosign(body, wallet))

    assert response.status_code == 201, response.json()
    assert list(Record.objects.values_list("cosigner", flat=True)) == [wallet.address, wallet.address]
    listed = APIClient()
    listed.force_authenticate(ext.user)
    assert {item["cosigner"] for item in listed.get("/api/v1/contributions/records/").json()["results"]} == {
        wallet.address
    }
    client.force_login(ext.user)
    assert wallet.address in client.get("/contributions/").content.decode()


def test_an_upload_without_co_signature_is_accepted_as_before(ext, wallet):
    response = ext.upload([record("weather in lisbon")])
    assert response.status_code == 201
    assert Record.objects.get().cosigner == ""


def test_a_co_signature_by_another_key_is_refused(ext, wallet):
    body = ext.body([record("weather in lisbon")])
    response = post(ext, body, wallet=wallet.address, wallet_signature=cosign(body, Account.create()))
    assert response.status_code == 401 and response.json()["code"] == "bad_cosignature"
    assert nothing_stored(ext)


def test_a_co_signature_of_another_batch_cannot_be_replayed(ext, wallet):
    """Same records, another counter: the co-signature of counter 1 does not carry over to counter 2."""
    first = ext.body([record("weather in lisbon")], counter=1)
    second = ext.body([record("weather in porto")], counter=2)
    response = post(ext, second, wallet=wallet.address, wallet_signature=cosign(first, wallet))
    assert response.status_code == 401 and response.json()["code"] == "bad_cosignature"
    assert nothing_stored(ext)


def test_a_wallet_linked_to_another_user_cannot_co_sign(ext, other_ext):
    theirs = Account.create()
    link(other_ext.user, theirs)
    body = ext.body([record("weather in lisbon")])
    response = post(ext, body, wallet=theirs.address, wallet_signature=cosign(body, theirs))
    assert response.status_code == 403 and response.json()["code"] == "wallet_not_linked"
    assert nothing_stored(ext)


def test_an_unlinked_or_never_linked_wallet_cannot_co_sign(ext, wallet):
    stranger = Account.create()
    body = ext.body([record("weather in lisbon")], counter=1)
    response = post(ext, body, wallet=stranger.address, wallet_signature=cosign(body, stranger))
    assert response.status_code == 403 and response.json()["code"] == "wallet_not_linked"

    wallet_unlink(user=ext.user, wallet_id=Wallet.objects.get(address=wallet.address).pk)
    response = post(ext, body, wallet=wallet.address, wallet_signature=cosign(body, wallet))
    assert response.status_code == 403 and response.json()["code"] == "wallet_not_linked"
    assert nothing_stored(ext)


@pytest.mark.parametrize(
    ("wallet_header", "signature_header", "field"),
    [
        ("good", None, "X-Janction-Wallet-Signature"),
        (None, "good", "X-Janction-Wallet"),
        ("0x1234", "good", "X-Janction-Wallet"),
        ("not an address at all, far too long" * 10, "good", "X-Janction-Wallet"),
        ("good", "0x" + "00" * 65, "X-Janction-Wallet-Signature"),
        ("good", "0x" + "zz" * 65, "X-Janction-Wallet-Signature"),
        ("good", "0x" + "ab" * 64, "X-Janction-Wallet-Signature"),
        ("good", "0x" + "ab" * 5000, "X-Janction-Wallet-Signature"),
    ],
)
def test_a_malformed_co_signature_is_refused(ext, wallet, wallet_header, signature_header, field):
    body = ext.body([record("weather in lisbon")])
    good = {"good": None}
    response = post(
        ext,
        body,
        wallet=wallet.address if wallet_header == "good" else good.get(wallet_header, wallet_header),
        wallet_signature=cosign(body, wallet) if signature_header == "good" else signature_header,
    )
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "malformed_cosignature" and response.json()["detail"]["field"] == field
    assert nothing_stored(ext)


def test_a_co_signature_does_not_replace_the_device_signature(ext, wallet):
    body = ext.body([record("weather in lisbon")])
    response = APIClient().post(
        UPLOAD_URL,
        data=body,
        content_type="application/json",
        HTTP_X_JANCTION_WALLET=wallet.address,
        HTTP_X_JANCTION_WALLET_SIGNATURE=cosign(body, wallet),
    )
    assert response.status_code == 401 and response.json()["code"] == "bad_signature"
    assert nothing_stored(ext)
