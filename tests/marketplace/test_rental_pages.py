"""The buyer's rental pages: the list and rent form, one rental, cancel; owner only, exactly once per form."""

import re

import pytest
from django.test import Client

from marketplace.rentals.models import Rental, RentalState
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import USDC, balance, fund, run_round, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def node(db):
    return online_node(UserFactory(), name="rig-a", vgpus=2, price=500_000)


@pytest.fixture
def buyer(db):
    user = UserFactory()
    fund(user, 100 * USDC)
    return user


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_token(client) -> str:
    page = client.get("/rentals/").content.decode()
    return re.search(r'name="form_token" value="([0-9a-f-]{36})"', page).group(1)


def rent_form(client, **overrides) -> dict:
    data = {
        "form_token": form_token(client),
        "pool": "ada-12g",
        "vgpus": "1",
        "max_price": "2",
        "max_duration_minutes": "60",
        "image": "docker.io/library/python:3.12",
        "command": "python -c 'print(\"hello world\")'",
        "env": "EPOCHS=3\nHF_TOKEN=hf_secret\n",
        "secret_env": "",
        "restart_on_interruption": "on",
    }
    data.update(overrides)
    return data


def test_anonymous_visitors_are_sent_to_sign_in(buyer, node):
    rental = submit(buyer)
    anonymous = Client()
    for response in (
        anonymous.get("/rentals/"),
        anonymous.get(f"/rentals/{rental.pk}/"),
        anonymous.post("/rentals/", {"pool": "ada-12g"}),
        anonymous.post(f"/rentals/{rental.pk}/cancel/"),
    ):
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    rental.refresh_from_db()
    assert rental.state == RentalState.PENDING and Rental.objects.count() == 1


def test_renting_through_the_form_submits_the_rental_and_shows_it(buyer, node):
    client = client_for(buyer)
    response = client.post("/rentals/", rent_form(client))
    rental = Rental.objects.get(owner=buyer)
    assert response.status_code == 302 and response["Location"] == f"/rentals/{rental.pk}/"
    assert rental.command == ["python", "-c", 'print("hello world")']
    assert rental.env == {"EPOCHS": "3", "HF_TOKEN": "hf_secret"}
    assert rental.max_duration_seconds == 3600 and rental.restart_on_interruption
    assert balance(buyer, "escrow") == 2 * USDC  # 2 USDC x 1 vGPU x 1 hour

    listing = client.get("/rentals/").content.decode()
    assert f'href="/rentals/{rental.pk}/"' in listing and "rental-pending" in listing
    detail = client.get(f"/rentals/{rental.pk}/").content.decode()
    assert "Waiting for a round" in detail and "Submitted" in detail
    assert "hf_secret" not in detail and "HF_TOKEN=********" in detail
    assert f"/api/v1/rentals/{rental.pk}/logs/download/" in detail
    assert f'data-ws-path="/ws/rentals/{rental.pk}/"' in detail


@pytest.mark.django_db(transaction=True)  # the round allocates after its commit
def test_the_detail_page_names_the_nodes_and_labels_fake_gpus(buyer, node):
    rental = run_round(submit(buyer))
    detail = client_for(buyer).get(f"/rentals/{rental.pk}/").content.decode()
    placements = detail[detail.index('id="placements"') :]
    assert "rig-a" in placements and "FAKE GPUs" in placements
    assert "rental-starting" in detail


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("command", "python -c 'print(1)", "close every quote"),
        ("env", "NOT A PAIR", "Environment line 1 is not KEY=VALUE."),
        ("env", "JANCTION_NODE=x", "reserved for the platform"),
        ("image", "Not An Image!", "is not a valid OCI image reference"),
        ("vgpus", "two", "vgpus must be a positive whole number."),
        ("vgpus", "3", "has 2 vGPU(s) in all"),
        ("max_price", "-1", "max_price_per_hour"),
        ("max_duration_minutes", "0", "must be a positive whole number"),
        ("pool", "no-such-pool", "There is no pool named 'no-such-pool'"),
        ("secret_env", "MISSING", "secret_env must list names that appear in env."),
    ],
)
def test_bad_input_shows_the_error_next_to_the_form_and_creates_nothing(buyer, node, field, value, message):
    client = client_for(buyer)
    response = client.post("/rentals/", rent_form(client, **{field: value}))
    assert response.status_code == 400
    page = response.content.decode()
    error = re.search(r'<p class="form-error" id="rent-error" role="alert">(.*?)</p>', page, re.S).group(1)
    assert message in error.replace("&#x27;", "'")
    label = page[: page.index(f'name="{field}"')].rsplit("<label", 1)[1]
    assert "invalid" in label  # the field the error is about is marked
    assert value.split("\n")[0] in page.replace("&#x27;", "'")  # what the buyer typed is kept
    assert not Rental.objects.exists() and balance(buyer, "escrow") == 0


def test_short_funds_are_explained_and_nothing_is_created(node):
    poor = UserFactory()
    fund(poor, 1 * USDC)
    client = client_for(poor)
    response = client.post("/rentals/", rent_form(client, max_price="5"))
    assert response.status_code == 402
    assert "needs 5 USDC in escrow" in response.content.decode()
    assert not Rental.objects.exists() and balance(poor, "available") == 1 * USDC


def test_a_double_submit_creates_one_rental(buyer, node):
    client = client_for(buyer)
    data = rent_form(client)
    first = client.post("/rentals/", data)
    second = client.post("/rentals/", data)
    rental = Rental.objects.get(owner=buyer)
    assert first["Location"] == second["Location"] == f"/rentals/{rental.pk}/"
    assert balance(buyer, "escrow") == 2 * USDC
    client.post("/rentals/", rent_form(client))  # a fresh form is a new rental
    assert Rental.objects.filter(owner=buyer).count() == 2


def test_a_refused_submission_can_be_corrected_and_sent_with_the_same_form(buyer, node):
    client = client_for(buyer)
    data = rent_form(client, image="Not An Image!")
    assert client.post("/rentals/", data).status_code == 400
    response = client.post("/rentals/", {**data, "image": "docker.io/library/busybox:1.36"})
    assert response.status_code == 302 and Rental.objects.filter(owner=buyer).count() == 1


def test_a_form_without_its_token_is_refused(buyer, node):
    client = client_for(buyer)
    response = client.post("/rentals/", {**rent_form(client), "form_token": "forged"})
    assert response.status_code == 400 and "This form is out of date" in response.content.decode()
    assert not Rental.objects.exists()


def test_another_users_rental_is_404_and_cannot_be_cancelled(buyer, node):
    rental = submit(buyer)
    other = client_for(UserFactory())
    assert other.get(f"/rentals/{rental.pk}/").status_code == 404
    assert other.post(f"/rentals/{rental.pk}/cancel/").status_code == 404
    assert f"/rentals/{rental.pk}/" not in other.get("/rentals/").content.decode()
    rental.refresh_from_db()
    assert rental.state == RentalState.PENDING


def test_cancel_works_once(buyer, node):
    rental = submit(buyer)
    client = client_for(buyer)
    assert "Cancel rental" in client.get(f"/rentals/{rental.pk}/").content.decode()

    first = client.post(f"/rentals/{rental.pk}/cancel/", follow=True)
    rental.refresh_from_db()
    assert rental.state == RentalState.CANCELLED and rental.refunded == 2 * USDC
    page = first.content.decode()
    assert "The rental is cancelled" in page and "Cancel rental" not in page and "rental-cancelled" in page

    second = client.post(f"/rentals/{rental.pk}/cancel/", follow=True)
    assert "already cancelled; there is nothing to cancel" in second.content.decode()
    rental.refresh_from_db()
    assert rental.refunded == 2 * USDC and balance(buyer, "available") == 100 * USDC
    assert client.get(f"/rentals/{rental.pk}/cancel/").status_code == 405
