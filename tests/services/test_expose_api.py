"""Service rentals through the REST API: expose validation, tokens, scoped keys, role/index, the start message."""

import uuid

import pytest
from rest_framework.test import APIClient

from marketplace.models import ApiKey
from marketplace.rentals.models import Rental
from marketplace.svc.errors import ServiceNotFound, ServiceStarting, ServiceUnauthorized
from marketplace.svc.models import ServiceToken
from marketplace.svc.services import service_authorize
from nodes.models import NodeCommand
from tests.rentals.conftest import USDC, fund, run_round, submit

pytestmark = pytest.mark.django_db

SERVICE = {
    "pool": "ada-12g",
    "vgpus": 1,
    "max_price_per_hour": "2",
    "max_duration_seconds": 3600,
    "image": "docker.io/library/python:3.12",
    "command": ["python", "-m", "http.server", "8000"],
    "expose": [{"name": "api", "port": 8000}],
}


def post(client, path, data=None):
    return client.post(path, data or {}, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))


@pytest.fixture
def funded(owner):
    fund(owner, 100 * USDC)
    return owner


def passes_auth(slug: str, credential: str) -> bool:
    """Return whether the credential opens the service (a rental still waiting for its node answers 503)."""
    try:
        service_authorize(slug=slug, port_name="api", credential=credential)
    except ServiceStarting:
        return True
    return True


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_service_rental_gets_a_slug_and_urls(owner_client, funded, node):
    response = post(owner_client, "/api/v1/rentals/", SERVICE)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["expose"] == [{"name": "api", "port": 8000}]
    assert len(body["service_slug"]) == 12
    assert body["service_urls"] == {"api": f"/svc/{body['service_slug']}/api/"}
    assert body["service_public"] is False
    service = owner_client.get(f"/api/v1/rentals/{body['id']}/service/").json()
    assert service["stats"] == [
        {
            "port_name": "api",
            "requests": 0,
            "errors": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "latency_ms_mean": None,
            "latency_ms_max": None,
            "overlay_requests": 0,
        }
    ]


@pytest.mark.parametrize(
    ("expose", "says"),
    [
        ({"name": "api", "port": 8000}, "must be a list"),
        ([{"name": "api", "port": 0}], "from 1 to 65535"),
        ([{"name": "api", "port": 65536}], "from 1 to 65535"),
        ([{"name": "api", "port": "8000"}], "from 1 to 65535"),
        ([{"name": "api", "port": True}], "from 1 to 65535"),
        ([{"name": "api", "port": 8000}, {"name": "api", "port": 8001}], "appears twice"),
        ([{"name": "a", "port": 8000}, {"name": "b", "port": 8000}], "appears twice"),
        ([{"name": "API", "port": 8000}], "lower-case"),
        ([{"name": "../x", "port": 8000}], "lower-case"),
        ([{"name": "-x", "port": 8000}], "lower-case"),
        ([{"name": "x" * 33, "port": 8000}], "lower-case"),
        ([{"name": "api", "port": 8000, "extra": 1}], "name and a port"),
        ([{"port": 8000}], "name and a port"),
        ([{"name": f"p{i}", "port": 8000 + i} for i in range(9)], "at most 8 ports"),
        ([[[[[[[["deep"]]]]]]]], "name and a port"),
    ],
)
def test_bad_expose_is_a_400_that_says_what_to_change_and_writes_nothing(owner_client, funded, node, expose, says):
    response = post(owner_client, "/api/v1/rentals/", {**SERVICE, "expose": expose})
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "expose_invalid"
    assert says in response.json()["message"]
    assert not Rental.objects.exists()


def test_public_needs_exposed_ports_and_a_boolean(owner_client, funded, node):
    plain = {key: value for key, value in SERVICE.items() if key != "expose"}
    assert post(owner_client, "/api/v1/rentals/", {**plain, "public": True}).status_code == 400
    assert post(owner_client, "/api/v1/rentals/", {**SERVICE, "public": "yes"}).status_code == 400
    assert not Rental.objects.exists()


def test_tokens_are_shown_once_stored_hashed_and_revoked(owner_client, funded, node):
    rental_id = post(owner_client, "/api/v1/rentals/", SERVICE).json()["id"]
    created = post(owner_client, f"/api/v1/rentals/{rental_id}/service/tokens/", {"name": "frontend"})
    assert created.status_code == 201
    raw = created.json()["token"]
    assert raw.startswith("jst_")
    token = ServiceToken.objects.get()
    assert raw not in token.token_hash and token.token_hash != raw
    slug = Rental.objects.get().service_slug
    assert passes_auth(slug, raw)
    assert post(owner_client, f"/api/v1/rentals/{rental_id}/service/tokens/", {"name": "frontend"}).status_code == 409
    revoked = owner_client.delete(f"/api/v1/rentals/{rental_id}/service/tokens/{token.pk}/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    with pytest.raises(ServiceUnauthorized):
        service_authorize(slug=slug, port_name="api", credential=raw)
    # A token opens nothing of the account API.
    assert bearer(raw).get("/api/v1/rentals/").status_code in (401, 403)


def test_another_users_rental_has_no_service_for_them(owner_client, other_client, funded, node):
    rental_id = post(owner_client, "/api/v1/rentals/", SERVICE).json()["id"]
    assert other_client.get(f"/api/v1/rentals/{rental_id}/service/").status_code == 404
    assert post(other_client, f"/api/v1/rentals/{rental_id}/service/tokens/", {"name": "x"}).status_code == 404
    assert post(other_client, f"/api/v1/rentals/{rental_id}/service/keys/", {"name": "x"}).status_code == 404
    assert not ServiceToken.objects.exists()


def test_a_key_scoped_to_a_service_cannot_touch_the_account(owner_client, owner, funded, node):
    rental_id = post(owner_client, "/api/v1/rentals/", SERVICE).json()["id"]
    created = post(owner_client, f"/api/v1/rentals/{rental_id}/service/keys/", {"name": "svc-only"})
    assert created.status_code == 201
    raw = created.json()["key"]
    scoped = bearer(raw)
    for path in ("/api/v1/rentals/", "/api/v1/profile/", "/api/v1/api-keys/", f"/api/v1/rentals/{rental_id}/"):
        response = scoped.get(path)
        assert response.status_code == 403, (path, response.status_code)
        assert "scoped to the service" in response.json()["message"]
    assert post(scoped, "/api/v1/api-keys/", {"name": "escalate"}).status_code == 403
    assert ApiKey.objects.filter(user=owner).count() == 1
    slug = Rental.objects.get().service_slug
    assert passes_auth(slug, raw)
    # The scoped key opens only its own service: another service of the same owner is "not found".
    other_id = post(owner_client, "/api/v1/rentals/", SERVICE).json()["id"]
    other_slug = Rental.objects.get(pk=other_id).service_slug
    with pytest.raises(ServiceNotFound):
        service_authorize(slug=other_slug, port_name="api", credential=raw)


def test_who_may_call_a_service(owner_client, owner, other_user, funded, node):
    from marketplace.services import api_key_create

    rental_id = post(owner_client, "/api/v1/rentals/", SERVICE).json()["id"]
    slug = Rental.objects.get().service_slug
    _, mine = api_key_create(user=owner, name="mine")
    _, theirs = api_key_create(user=other_user, name="theirs")
    with pytest.raises(ServiceUnauthorized):
        service_authorize(slug=slug, port_name="api", credential="")
    with pytest.raises(ServiceUnauthorized):
        service_authorize(slug=slug, port_name="api", credential="jct_nope_nope")
    with pytest.raises(ServiceUnauthorized):
        service_authorize(slug=slug, port_name="api", credential="garbage")
    with pytest.raises(ServiceNotFound):
        service_authorize(slug=slug, port_name="api", credential=theirs)
    with pytest.raises(ServiceNotFound):
        service_authorize(slug=slug, port_name="web", credential=mine)
    with pytest.raises(ServiceNotFound):
        service_authorize(slug="nosuchslug123", port_name="api", credential=mine)
    response = owner_client.patch(f"/api/v1/rentals/{rental_id}/service/", {"public": True}, format="json")
    assert response.status_code == 200 and response.json()["public"] is True
    assert passes_auth(slug, mine)
    # Public: anyone, even without a key; the rental still waits for a node, so it is starting (503).
    with pytest.raises(ServiceStarting):
        service_authorize(slug=slug, port_name="api", credential="")


@pytest.mark.django_db(transaction=True)
def test_the_start_message_carries_service_ports_tunnels_and_role(funded, node, settings):
    settings.SERVICE_INGRESS_TUNNEL_ADDRESSES = ["ingress.example:8301"]
    rental = submit(funded, expose=[{"name": "api", "port": 8000}, {"name": "admin", "port": 9000}])
    rental = run_round(rental)
    start = next(
        c.message["start_placement"] for c in NodeCommand.objects.filter(node=node) if "start_placement" in c.message
    )
    assert start["service_ports"] == [
        {"name": "api", "container_port": 8000},
        {"name": "admin", "container_port": 9000},
    ]
    assert start["tunnel_addresses"] == ["ingress.example:8301"]
    assert (start["role"], start.get("placement_index", 0), start["placement_count"]) == ("primary", 0, 1)
    assert not start.get("ports") and not start.get("network_allowed")
