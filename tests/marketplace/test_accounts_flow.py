"""The allauth flow: sign up, verify the e-mail from the sent link, log in, log out; schema and docs."""

import re

import pytest
from django.core import mail
from django.test import Client

from tests.factories import PASSWORD as PASSWORD_OF_FACTORY

pytestmark = pytest.mark.django_db

EMAIL = "newbuyer@example.test"
PASSWORD = "a-long-and-unusual-passphrase"


def test_sign_up_verify_log_in(client: Client):
    response = client.post(
        "/accounts/signup/", {"email": EMAIL, "password1": PASSWORD, "password2": PASSWORD}, follow=True
    )
    assert response.status_code == 200
    assert "/accounts/confirm-email/" in response.redirect_chain[-1][0]
    # Mandatory verification: the account cannot log in before confirming.
    client.post("/accounts/logout/")
    response = client.post("/accounts/login/", {"login": EMAIL, "password": PASSWORD}, follow=True)
    assert not response.wsgi_request.user.is_authenticated

    assert len(mail.outbox) >= 1
    link = re.search(r"https?://[^/]+(/accounts/confirm-email/[^\s]+)", mail.outbox[-1].body).group(1)
    assert client.get(link).status_code == 200
    response = client.post(link, follow=True)
    assert response.status_code == 200

    client.post("/accounts/logout/")
    response = client.post("/accounts/login/", {"login": EMAIL, "password": PASSWORD}, follow=True)
    assert response.wsgi_request.user.is_authenticated
    assert response.wsgi_request.user.profile.is_buyer
    assert client.get("/dashboard/").status_code == 200

    client.post("/accounts/logout/")
    assert client.get("/dashboard/").status_code == 302


def test_wrong_password_does_not_log_in(client: Client, owner):
    response = client.post("/accounts/login/", {"login": owner.email, "password": "wrong"}, follow=True)
    assert not response.wsgi_request.user.is_authenticated
    assert b"not correct" in response.content


def test_password_reset_sends_a_link(client: Client, owner):
    client.post("/accounts/password/reset/", {"email": owner.email})
    assert any("/accounts/password/reset/key/" in message.body for message in mail.outbox)


def test_totp_two_factor_is_activated_and_then_required(client: Client, owner):
    from allauth.mfa.models import Authenticator
    from allauth.mfa.totp.internal.auth import (
        SECRET_SESSION_KEY,
        format_hotp_value,
        hotp_value,
        yield_hotp_counters_from_time,
    )

    def current_code(secret):
        return format_hotp_value(hotp_value(secret, next(yield_hotp_counters_from_time())))

    client.post("/accounts/login/", {"login": owner.email, "password": PASSWORD_OF_FACTORY})
    # Changing security settings asks for the password again.
    assert client.get("/accounts/2fa/totp/activate/").status_code == 302
    client.post("/accounts/reauthenticate/", {"password": PASSWORD_OF_FACTORY})
    assert client.get("/accounts/2fa/totp/activate/").status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    response = client.post("/accounts/2fa/totp/activate/", {"code": current_code(secret)})
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=owner, type=Authenticator.Type.TOTP).exists()

    client.post("/accounts/logout/")
    response = client.post("/accounts/login/", {"login": owner.email, "password": PASSWORD_OF_FACTORY}, follow=True)
    assert not response.wsgi_request.user.is_authenticated  # the password alone is not enough now
    assert "/accounts/2fa/authenticate/" in response.redirect_chain[-1][0]
    response = client.post("/accounts/2fa/authenticate/", {"code": current_code(secret)}, follow=True)
    assert response.wsgi_request.user.is_authenticated


def test_openapi_schema_and_docs_are_served_without_a_cdn(client: Client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/v1/ledger/faucet/" in schema.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
    assert "/static/drf_spectacular_sidecar/" in html


def test_pages_render(client: Client, owner):
    assert client.get("/").status_code == 200
    client.force_login(owner)
    for url in ["/dashboard/", "/settings/api-keys/", "/settings/wallets/", "/nodes/", "/market/"]:
        assert client.get(url).status_code == 200, url


def test_api_key_page_shows_the_key_once(client: Client, owner):
    client.force_login(owner)
    response = client.post("/settings/api-keys/", {"name": "laptop"})
    assert b"shown only once" in response.content
    assert b"jct_" in response.content
    assert b"jct_" not in client.get("/settings/api-keys/").content
