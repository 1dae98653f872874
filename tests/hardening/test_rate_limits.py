"""Item 12 of the hardening issue: limits per address and per API key, shared by every process through Redis."""

import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from janction.throttling import parse_rate
from marketplace.services import api_key_create
from tests.factories import UserFactory


def test_anonymous_requests_are_limited_per_address(db, settings):
    settings.JANCTION_RATE_LIMIT_IP = "3/min"
    client, elsewhere = APIClient(), APIClient(REMOTE_ADDR="10.0.0.9")
    assert [client.get("/api/v1/pools/").status_code for _ in range(3)] == [200] * 3
    response = client.get("/api/v1/pools/")
    assert response.status_code == 429
    assert response.json()["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert elsewhere.get("/api/v1/pools/").status_code == 200  # another address has its own budget


def test_guessing_api_keys_is_limited_before_authentication(db, settings):
    settings.JANCTION_RATE_LIMIT_IP = "2/min"
    client = APIClient(HTTP_AUTHORIZATION="Bearer jct_guess")
    assert [client.get("/api/v1/rentals/").status_code for _ in range(3)] == [401, 401, 429]


def test_forwarded_for_counts_only_behind_a_trusted_proxy(db, settings):
    settings.JANCTION_RATE_LIMIT_IP = "1/min"
    spoofer = APIClient()
    assert spoofer.get("/api/v1/pools/", HTTP_X_FORWARDED_FOR="1.1.1.1").status_code == 200
    assert spoofer.get("/api/v1/pools/", HTTP_X_FORWARDED_FOR="2.2.2.2").status_code == 429
    settings.JANCTION_TRUSTED_PROXIES = 1
    assert spoofer.get("/api/v1/pools/", HTTP_X_FORWARDED_FOR="3.3.3.3").status_code == 200


def test_each_api_key_has_its_own_budget(db, settings):
    settings.JANCTION_RATE_LIMIT_KEY = "2/min"
    user = UserFactory()
    first, second = (APIClient(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=user, name=n)[1]}") for n in "ab")
    assert [first.get("/api/v1/ledger/balances/").status_code for _ in range(3)] == [200, 200, 429]
    throttled = first.get("/api/v1/rentals/")
    assert throttled.status_code == 429 and throttled["Retry-After"].isdigit()
    assert throttled.json()["code"] == "throttled"
    assert second.get("/api/v1/ledger/balances/").status_code == 200


def test_limits_are_shared_across_processes_through_the_cache(settings):
    """Another process counting against the same address uses up this one's budget (Redis in real mode)."""
    if "redis" not in settings.CACHES["default"]["BACKEND"].lower():
        pytest.fail("This test needs the Redis cache: set REDIS_URL (see make test).")
    # A day's window: with a minute's, the other process (seconds to start on a loaded machine) could count in
    # one minute and this request land in the next, which has a budget of its own.
    settings.JANCTION_RATE_LIMIT_IP = "5/day"
    code = (
        "import django; django.setup()\n"
        "from janction.throttling import rate_limit_wait\n"
        "print([rate_limit_wait('ip', '127.0.0.1', '5/day') for _ in range(5)])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == str([None] * 5)
    assert APIClient().get("/api/v1/pools/").status_code == 429


@pytest.mark.parametrize(
    ("rate", "parsed"), [("600/min", (600, 60)), ("5/second", (5, 1)), ("1/day", (1, 86400)), ("", None)]
)
def test_parse_rate(rate, parsed):
    assert parse_rate(rate) == parsed
