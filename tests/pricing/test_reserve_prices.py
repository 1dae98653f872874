"""Reserve prices: a node never gets a zero ask by accident; the form and the API take the price."""

import pytest
from django.test import Client

from nodes.models import Node
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_api_node_without_a_price_gets_the_pool_default_ask(owner_client, owner, settings):
    settings.PRICING_DEFAULT_ASK = "0.75"
    response = owner_client.post("/api/v1/nodes/", {"name": "rig"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["node"]["reserve_price"] == "0.75"
    assert Node.objects.get(owner=owner).reserve_price_per_hour == 750_000


def test_api_takes_an_explicit_price_even_zero(owner_client, owner):
    response = owner_client.post("/api/v1/nodes/", {"name": "free", "reserve_price": "0"}, format="json")
    assert response.status_code == 201 and response.json()["node"]["reserve_price"] == "0"


def _browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_node_form_defaults_to_the_pool_default_ask_and_takes_a_price(settings):
    settings.PRICING_DEFAULT_ASK = "1.00"
    user = UserFactory()
    browser = _browser(user)
    page = browser.get("/nodes/").content.decode()
    assert 'name="reserve_price"' in page and 'value="1"' in page
    browser.post("/nodes/", {"name": "a", "reserve_price": ""})
    browser.post("/nodes/", {"name": "b", "reserve_price": "0.45"})
    prices = dict(Node.objects.filter(owner=user).values_list("name", "reserve_price_per_hour"))
    assert prices == {"a": 1_000_000, "b": 450_000}


@pytest.mark.parametrize("price", ["-1", "cheap", "0.0000001", "99999", "NaN"])
def test_node_form_refuses_a_bad_price_with_a_message_and_creates_nothing(price):
    user = UserFactory()
    response = _browser(user).post("/nodes/", {"name": "bad", "reserve_price": price}, follow=True)
    assert response.status_code == 200
    assert "Give the ask as USDC per vGPU-hour" in response.content.decode()
    assert not Node.objects.filter(owner=user).exists()


def test_market_page_explains_buyer_and_provider_prices(anon_client):
    from tests.factories import online_node

    online_node(UserFactory(), vgpus=1, price=300_000)
    page = Client().get("/market/").content.decode()
    assert "<strong>Buyers</strong> all pay one price per vGPU-hour" in page
    assert "<strong>Providers</strong> are paid that same price" in page
    assert "Reference price" in page


@pytest.mark.parametrize("bad", ["cheap", "0.0000001", "-1"])
def test_a_bad_default_ask_setting_is_a_configuration_error(settings, bad):
    from django.core.exceptions import ImproperlyConfigured

    from pricing.services import pool_default_ask

    settings.PRICING_POOL_DEFAULT_ASKS = f"ada-12g={bad}"
    with pytest.raises(ImproperlyConfigured, match="ada-12g"):
        pool_default_ask(pool_name="ada-12g")
    settings.PRICING_POOL_DEFAULT_ASKS = "ada-12g=0.30, hopper-20g = 2"
    assert pool_default_ask(pool_name="ada-12g") == 300_000
    assert pool_default_ask(pool_name="hopper-20g") == 2_000_000
