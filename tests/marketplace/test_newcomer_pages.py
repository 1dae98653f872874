"""What a newcomer meets: the profile page, the demo faucet and wallet buttons, the site's own error pages,
the node command's CA pin and the site address that SIWE and the allowed hosts follow."""

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from ledger.models import Account, SiweNonce, Wallet
from marketplace.models import Profile
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def faucet_token(client) -> str:
    return re.search(r'name="form_token" value="([0-9a-f-]{36})"', client.get("/dashboard/").content.decode()).group(1)


def usdc_available(user) -> int:
    account = Account.objects.filter(owner=user, kind="available", currency="USDC").first()
    return 0 if account is None else int(account.balance)


# --- profile ---------------------------------------------------------------------------------------------------


def test_the_profile_page_saves_name_region_and_roles_and_the_dashboard_greets_by_name(client, user):
    response = client.post(
        "/settings/profile/", {"display_name": "Ada", "region": "apac", "is_buyer": "on", "is_provider": "on"}
    )
    assert response.status_code == 302
    profile = Profile.objects.get(user=user)
    assert (profile.display_name, profile.region, profile.is_buyer, profile.is_provider) == ("Ada", "apac", True, True)
    assert "Hello, Ada" in client.get("/dashboard/").content.decode()
    page = client.get("/settings/profile/").content.decode()
    assert 'value="Ada"' in page and 'value="apac" selected' in page
    # Found at merge time: the notifications form had been pasted into the title block, once more than in the page.
    assert "<title>Profile · Janction</title>" in page
    assert page.count('id="notifications-form"') == 1


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"display_name": "Ada", "region": "eu"}, "Keep at least one role"),
        ({"display_name": "x" * 81, "region": "eu", "is_buyer": "on"}, "at most 80 characters"),
        ({"display_name": "Ada", "region": "mars", "is_buyer": "on"}, "Select a valid choice"),
    ],
)
def test_a_bad_profile_is_refused_with_what_to_change_and_nothing_saved(client, user, form, message):
    before = Profile.objects.get_or_create(user=user)[0].display_name
    response = client.post("/settings/profile/", form)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Profile.objects.get(user=user).display_name == before


def test_a_display_name_is_shown_as_text_never_as_markup(client):
    client.post("/settings/profile/", {"display_name": "<script>alert(1)</script>", "region": "eu", "is_buyer": "on"})
    page = client.get("/dashboard/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_profile_needs_a_signed_in_user():
    response = Client().get("/settings/profile/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- demo buttons ------------------------------------------------------------------------------------------------


def test_the_demo_faucet_button_credits_100_usdc_once_per_page_view(embedded, client, user):
    token = faucet_token(client)
    for _ in range(3):  # a double click and a resubmitted page credit once
        response = client.post("/demo/faucet/", {"form_token": token})
        assert response.status_code == 302
    assert usdc_available(user) == 100_000_000
    client.post("/demo/faucet/", {"form_token": faucet_token(client)})
    assert usdc_available(user) == 200_000_000
    page = client.get("/dashboard/").content.decode()
    assert "Credited 100 demo USDC (not real money)" in page


@pytest.mark.parametrize("token", ["", "not-a-uuid", "' OR 1=1 --", "x" * 10_000])
def test_the_demo_faucet_refuses_a_forged_form_token(embedded, client, user, token):
    response = client.post("/demo/faucet/", {"form_token": token}, follow=True)
    assert "This form is out of date" in response.content.decode()
    assert usdc_available(user) == 0


def test_demo_buttons_do_not_exist_in_real_mode(settings, client, user):
    settings.JANCTION_EMBEDDED = False
    assert "demo-faucet" not in client.get("/dashboard/").content.decode()
    assert "demo-wallet-link" not in client.get("/settings/wallets/").content.decode()
    assert client.post("/demo/faucet/", {"form_token": "8a1f4c52-5f4e-4b8e-9a55-0b3c1d2e3f40"}).status_code == 404
    assert client.post("/demo/wallet/").status_code == 404
    assert usdc_available(user) == 0 and not Wallet.objects.exists()


def test_demo_actions_are_post_only_and_for_signed_in_users(embedded, client):
    assert client.get("/demo/faucet/").status_code == 405
    assert client.get("/demo/wallet/").status_code == 405
    anonymous = Client()
    assert anonymous.post("/demo/faucet/").status_code == 302
    assert anonymous.post("/demo/wallet/").status_code == 302


def test_the_demo_wallet_button_links_a_wallet_through_the_siwe_check(embedded, client, user):
    response = client.post("/demo/wallet/", follow=True)
    wallet = Wallet.objects.get(user=user)
    assert f"Linked demo wallet {wallet.address}" in response.content.decode()
    nonce = SiweNonce.objects.get(user=user)
    assert nonce.used_at is not None and nonce.address == wallet.address
    client.post("/demo/wallet/")
    assert Wallet.objects.filter(user=user).count() == 2  # each press makes a new key


def test_pressing_the_demo_wallet_button_again_and_again_stops_at_three(embedded, client, user):
    for _ in range(3):
        client.post("/demo/wallet/")
    response = client.post("/demo/wallet/", follow=True)
    assert "You already have 3 linked wallets; unlink one" in response.content.decode()
    assert Wallet.objects.filter(user=user).count() == 3
    assert SiweNonce.objects.filter(user=user).count() == 3  # the refused press issued no nonce


def test_demo_buttons_are_labelled_as_demo(embedded, client):
    dashboard = client.get("/dashboard/").content.decode()
    assert 'class="badge demo">DEMO<' in dashboard and "not real" in dashboard
    wallets = client.get("/settings/wallets/").content.decode()
    assert "Link a demo wallet" in wallets and "throws the key away" in wallets


# --- error pages -------------------------------------------------------------------------------------------------


def test_a_404_is_the_sites_page_without_the_url_patterns(settings):
    settings.DEBUG = False
    response = Client().get("/no-such-page/<b>x</b>")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Page not found" in page and "/static/css/janction.css" in page
    assert "<b>x</b>" not in page  # the path is shown as text
    assert "URLconf" not in page and "api/v1/" not in page


def test_an_oversized_form_is_the_sites_413_page(settings):
    settings.DEBUG = False
    client = Client()
    response = client.post("/accounts/login/", {"login": "x" * (3 * 1024 * 1024), "password": "y"})
    assert response.status_code == 413
    page = response.content.decode()
    assert "Request too large" in page and "Traceback" not in page and "SECRET_KEY" not in page


def test_a_server_error_is_the_sites_page(settings):
    from django.test import RequestFactory
    from django.views.defaults import server_error

    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong on our side" in page and "/static/css/janction.css" in page


# --- the node command pins the platform CA -------------------------------------------------------------------------


def test_the_node_command_pins_the_platform_ca(embedded, tmp_path, client, user):
    from nodes.ca import platform_ca

    embedded.VAR_DIR = tmp_path
    page = client.post("/nodes/", {"name": "rig-1"}).content.decode()
    command = re.search(r'<code id="agent-command">(.*?)</code>', page, re.S).group(1)
    fingerprint = platform_ca().fingerprint
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprint)
    assert f"--ca-fingerprint {fingerprint}" in command
    assert command.startswith(".venv/bin/python -m agent --gateway ")
    assert "--fake-gpus &quot;RTX 4090:1&quot; --runtime sandbox" in command  # the demo runs it on this machine
    assert re.search(r"--state-dir ~/\.janction-agent/node-\d+", command)


def test_the_node_command_in_real_mode_names_python3_and_the_configured_ca(settings, owner_client):
    from nodes.ca import ca_generate, ca_key_pem

    ca = ca_generate()
    settings.JANCTION_EMBEDDED = False
    settings.AGENT_CA_CERT_PEM = ca.certificate_pem
    settings.AGENT_CA_KEY_PEM = ca_key_pem(ca).decode()
    command = owner_client.post("/api/v1/nodes/", {"name": "rig-2"}, format="json").json()["agent_command"]
    assert command.startswith("python3 -m agent --gateway ")
    assert f"--ca-fingerprint {ca.fingerprint}" in command
    assert "--fake-gpus" not in command


# --- the site address ----------------------------------------------------------------------------------------------


def _settings_in(env: dict) -> subprocess.CompletedProcess:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SIWE_DOMAIN, s.SIWE_URI, ','.join(s.ALLOWED_HOSTS), ','.join(s.CSRF_TRUSTED_ORIGINS), "
        "s.ACCOUNT_DEFAULT_HTTP_PROTOCOL)"
    )
    clean = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "janction.settings", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_siwe_and_allowed_hosts_follow_the_port_and_the_site_url():
    assert _settings_in({}).stdout.split() == [
        "127.0.0.1:8000", "http://127.0.0.1:8000", "127.0.0.1,localhost,testserver", "http://127.0.0.1:8000", "http",
    ]  # fmt: skip
    assert _settings_in({"PORT": "9123"}).stdout.split()[:2] == ["127.0.0.1:9123", "http://127.0.0.1:9123"]
    public = _settings_in({"JANCTION_SITE_URL": "https://janction.example/"}).stdout.split()
    assert public == [
        "janction.example", "https://janction.example", "127.0.0.1,localhost,testserver,janction.example",
        "https://janction.example", "https",
    ]  # fmt: skip


def test_an_ipv6_site_url_is_an_allowed_host_in_brackets():
    domain, uri, hosts = _settings_in({"JANCTION_SITE_URL": "http://[::1]:8080"}).stdout.split()[:3]
    assert (domain, uri) == ("[::1]:8080", "http://[::1]:8080")
    assert hosts.split(",")[-1] == "[::1]"


@pytest.mark.parametrize("url", ["ftp://janction.example", "janction.example:8000", "http://x.example/app", "http://"])
def test_a_malformed_site_url_stops_the_start_with_what_to_write(url):
    result = _settings_in({"JANCTION_SITE_URL": url})
    assert result.returncode != 0
    assert "must be scheme://host[:port] with no path" in result.stderr


# --- a second `make run` -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["web", "enroll", "connect"])
def test_a_taken_port_stops_run_embedded_at_once_with_what_to_do(embedded, which):
    from django.core.management import CommandError, call_command

    with socket.socket() as taken, socket.socket() as free_a, socket.socket() as free_b:
        for sock in (taken, free_a, free_b):
            sock.bind(("127.0.0.1", 0))
        taken.listen()
        ports = {"web": free_a.getsockname()[1], "enroll": free_b.getsockname()[1], "connect": 0}
        free_a.close()
        free_b.close()
        ports[which] = taken.getsockname()[1]
        if which != "connect":
            with socket.socket() as spare:
                spare.bind(("127.0.0.1", 0))
                ports["connect"] = spare.getsockname()[1]
        embedded.AGENT_GATEWAY_ENROLL_LISTEN = f"127.0.0.1:{ports['enroll']}"
        embedded.AGENT_GATEWAY_LISTEN = f"127.0.0.1:{ports['connect']}"
        with pytest.raises(CommandError, match="another `make run` may be running") as failure:
            call_command("run_embedded", port=ports["web"], no_agent=True)
    hint = {"web": "make run PORT=", "enroll": "AGENT_GATEWAY_ENROLL_LISTEN", "connect": "AGENT_GATEWAY_LISTEN"}
    assert hint[which] in str(failure.value)
