"""The rentals REST API for every role, other users' rentals, and every kind of bad input."""

import uuid

import pytest

from marketplace.rentals.models import Rental, RentalState
from nodes.models import NodePlacement, PlacementLogLine
from pricing.models import Bid
from tests.rentals.conftest import USDC, balance, fund, run_round, submit

pytestmark = pytest.mark.django_db

VALID = {
    "pool": "ada-12g",
    "vgpus": 1,
    "max_price_per_hour": "2",
    "max_duration_seconds": 3600,
    "image": "docker.io/library/python:3.12",
    "command": ["python", "-c", "print(1)"],
    "env": {"MODE": "fast", "HF_TOKEN": "hf_abc", "PLAIN": "x", "MINE": "hidden"},
    "secret_env": ["MINE"],
}


def post(client, path, data=None, key=None):
    return client.post(path, data or {}, format="json", HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()))


@pytest.fixture
def owner_funded(owner):
    fund(owner, 100 * USDC)
    return owner


def test_submit_creates_a_rental_with_masked_secrets_and_replays_on_the_same_key(owner_client, owner_funded, node):
    key = str(uuid.uuid4())
    response = post(owner_client, "/api/v1/rentals/", VALID, key=key)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "pending" and body["held"] == "2" and body["pool"] == "ada-12g"
    assert body["env"] == {"MODE": "fast", "HF_TOKEN": "********", "PLAIN": "x", "MINE": "********"}
    assert body["events"][0]["to_state"] == "pending"
    replay = post(owner_client, "/api/v1/rentals/", VALID, key=key)
    assert replay.status_code == 201 and replay.json()["id"] == body["id"]
    assert Rental.objects.count() == 1 and balance(owner_funded, "escrow") == 2 * USDC
    listed = owner_client.get("/api/v1/rentals/").json()
    assert [r["id"] for r in listed["results"]] == [body["id"]]
    assert listed["results"][0]["env"]["HF_TOKEN"] == "********"
    assert "hf_abc" not in owner_client.get(f"/api/v1/rentals/{body['id']}/").content.decode()


def test_submit_needs_an_idempotency_key(owner_client, owner_funded, node):
    response = owner_client.post("/api/v1/rentals/", VALID, format="json")
    assert response.status_code == 400 and response.json()["code"] == "idempotency_key_required"
    assert Rental.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "code", "fragment"),
    [
        ({"pool": "nope-1g"}, "unknown_pool", "no pool named 'nope-1g'"),
        ({"vgpus": 3}, "rental_invalid", "has 2 vGPU(s) in all"),
        ({"vgpus": 0}, "rental_invalid", "vgpus must be a positive"),
        ({"vgpus": "1"}, "rental_invalid", "vgpus must be a positive"),
        ({"max_price_per_hour": "0"}, "rental_invalid", "greater than zero"),
        ({"max_price_per_hour": "-1"}, "rental_invalid", "max_price_per_hour"),
        ({"max_price_per_hour": "1000000"}, "rental_invalid", "at most 10000"),
        ({"max_price_per_hour": 1.5}, "rental_invalid", "decimal string"),
        ({"max_price_per_hour": "0.0000001"}, "rental_invalid", "6 decimals"),
        ({"max_duration_seconds": 0}, "rental_invalid", "max_duration_seconds must be a positive"),
        ({"max_duration_seconds": 10**9}, "rental_invalid", "max_duration_seconds may be at most"),
        ({"image": "Not An Image"}, "rental_invalid", "not a valid OCI image reference"),
        ({"image": "docker.io/library/busybox:bad tag"}, "rental_invalid", "not a valid OCI image reference"),
        ({"image": "busybox@sha256:short"}, "rental_invalid", "not a valid OCI image reference"),
        ({"command": "echo hi"}, "rental_invalid", "list of strings"),
        ({"command": ["echo", 1]}, "rental_invalid", "list of strings"),
        ({"env": {"BIG": "x" * 70_000}}, "rental_invalid", "the limit is 65536 bytes"),
        ({"env": {"1BAD": "x"}}, "rental_invalid", "not a valid environment variable name"),
        ({"env": {"JANCTION_PEERS": "x"}}, "rental_invalid", "reserved for the platform"),
        ({"env": ["A=1"]}, "rental_invalid", "map names to string values"),
        ({"secret_env": ["MISSING"]}, "rental_invalid", "secret_env must list names"),
        ({"ports": [0]}, "rental_invalid", "ports must be"),
        ({"restart_on_interruption": "yes"}, "rental_invalid", "true or false"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message_and_nothing_held(
    owner_client, owner_funded, node, change, code, fragment
):
    response = post(owner_client, "/api/v1/rentals/", {**VALID, **change})
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code and fragment in response.json()["message"]
    assert Rental.objects.count() == 0 and Bid.objects.count() == 0
    assert balance(owner_funded, "escrow") == 0 and balance(owner_funded, "available") == 100 * USDC


def test_a_request_that_is_not_an_object_is_refused(owner_client, owner_funded, node):
    response = owner_client.post("/api/v1/rentals/", ["x"], format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    assert response.status_code == 400 and Rental.objects.count() == 0


def test_short_funds_are_refused_with_402_and_nothing_created(owner_client, owner, node):
    fund(owner, USDC)
    response = post(owner_client, "/api/v1/rentals/", VALID)  # needs 2 USDC
    assert response.status_code == 402
    body = response.json()
    assert body["code"] == "insufficient_funds" and "needs 2 USDC in escrow" in body["message"]
    assert Rental.objects.count() == 0 and Bid.objects.count() == 0
    assert balance(owner, "available") == USDC and balance(owner, "escrow") == 0


def test_anonymous_users_get_401_everywhere(anon_client, buyer, node):
    rental = submit(buyer)
    for path in ["/api/v1/rentals/", f"/api/v1/rentals/{rental.pk}/", f"/api/v1/rentals/{rental.pk}/logs/"]:
        assert anon_client.get(path).status_code in (401, 403)
    assert post(anon_client, "/api/v1/rentals/", VALID).status_code in (401, 403)
    assert post(anon_client, f"/api/v1/rentals/{rental.pk}/cancel/").status_code in (401, 403)


def test_other_users_rentals_are_404_and_cannot_be_cancelled(other_client, buyer, node):
    rental = submit(buyer)
    assert other_client.get("/api/v1/rentals/").json()["results"] == []
    for path in [
        f"/api/v1/rentals/{rental.pk}/",
        f"/api/v1/rentals/{rental.pk}/logs/",
        f"/api/v1/rentals/{rental.pk}/logs/download/",
    ]:
        response = other_client.get(path)
        assert response.status_code == 404, path
    response = post(other_client, f"/api/v1/rentals/{rental.pk}/cancel/")
    assert response.status_code == 404 and response.json()["code"] == "rental_not_found"
    rental.refresh_from_db()
    assert rental.state == RentalState.PENDING


def test_cancel_then_cancel_again_is_a_409(owner_client, owner_funded, node):
    rental_id = post(owner_client, "/api/v1/rentals/", VALID).json()["id"]
    first = post(owner_client, f"/api/v1/rentals/{rental_id}/cancel/")
    assert first.status_code == 200 and first.json()["state"] == "cancelled" and first.json()["refunded"] == "2"
    second = post(owner_client, f"/api/v1/rentals/{rental_id}/cancel/")
    assert second.status_code == 409 and second.json()["code"] == "rental_already_ended"
    assert "already cancelled" in second.json()["message"]
    assert balance(owner_funded, "available") == 100 * USDC


def test_list_filters_and_paginates(owner_client, owner_funded, node):
    ids = [post(owner_client, "/api/v1/rentals/", VALID).json()["id"] for _ in range(3)]
    post(owner_client, f"/api/v1/rentals/{ids[0]}/cancel/")
    pending = owner_client.get("/api/v1/rentals/?state=pending").json()
    assert sorted(r["id"] for r in pending["results"]) == sorted(ids[1:])
    page = owner_client.get("/api/v1/rentals/?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]
    assert owner_client.get("/api/v1/rentals/?pool=other-1g").json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_logs_list_and_download_are_capped(owner_client, owner, settings, node):
    fund(owner, 100 * USDC)
    settings.RENTALS_LOG_LINES_MAX = 3
    rental = run_round(submit(owner))
    placement = NodePlacement.objects.get(placement_id=rental.placements.get().placement_id)
    PlacementLogLine.objects.bulk_create(
        [PlacementLogLine(placement=placement, seq=n, stream="stdout", text=f"line {n}") for n in range(1, 6)]
    )
    body = owner_client.get(f"/api/v1/rentals/{rental.pk}/logs/").json()
    assert [line["text"] for line in body["results"]] == ["line 1", "line 2", "line 3"]
    download = owner_client.get(f"/api/v1/rentals/{rental.pk}/logs/download/")
    assert download.status_code == 200 and download["Content-Type"].startswith("text/plain")
    assert download.content.decode().splitlines() == [
        "line 1",
        "line 2",
        "line 3",
        "[janction: 2 more line(s) not kept; the cap is 3]",
    ]
