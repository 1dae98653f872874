"""A buyer in the browser: rent a vGPU through the form, watch the rental live over the websocket, cancel it.

Django's live_server speaks WSGI only, so this test serves the whole site (pages, static files and the
websocket) with Daphne in a subprocess on the test database; the Redis channel layer carries what the test
does server-side to that process's consumers, as it carries a Celery worker's changes in production.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection, connections

from ledger.services import ledger_deposit
from marketplace.rentals.dispatch import rental_logs_stream, rentals_sync
from marketplace.rentals.models import Rental, RentalPlacement, RentalState
from nodes.models import NodePlacement, PlacementLogLine
from pricing.services import market_round_run
from tests.factories import PASSWORD, UserFactory, online_node

pytestmark = pytest.mark.django_db(transaction=True)

REPO = Path(__file__).resolve().parents[2]
USDC = 1_000_000
# Daphne serving the ASGI application with the static files, as `runserver` would.
SERVER = """
import sys
import daphne.server  # installs Twisted's asyncio reactor first
from daphne.endpoints import build_endpoint_description_strings
from janction.asgi import application
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
endpoints = build_endpoint_description_strings(host="127.0.0.1", port=int(sys.argv[1]))
daphne.server.Server(application=ASGIStaticFilesHandler(application), endpoints=endpoints).run()
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def asgi_server(transactional_db, tmp_path):
    """Run Daphne on the test database and the Redis channel layer; yield its base URL."""
    if not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.fail("The live view test needs PostgreSQL and Redis: set DATABASE_URL and REDIS_URL (see make test).")
    parts = urlsplit(os.environ["DATABASE_URL"])
    env = {
        **os.environ,
        "DATABASE_URL": urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}")),
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "x"),
        # The lone demo rig trades at the pool reference price (docs/pricing.md): pin it to the rig's 0.25.
        "PRICING_DEFAULT_ASK": "0.25",
    }
    port = _free_port()
    log_path = tmp_path / "daphne.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Daphne did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def server_side(function, *args, **kwargs):
    """Run `function` in a thread of its own, as a worker would.

    Playwright's sync API keeps an event loop in this thread, where async_to_sync (the live view's group_send
    after commit) refuses to run.
    """
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), f"{function.__name__} did not finish in 60 s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def run_round(rental_id: int) -> None:
    market_round_run(pool_id=Rental.objects.get(pk=rental_id).pool_id)


def agent_reports_running_with_output(rental_id: int) -> None:
    """Write what the gateway writes when the agent runs the placement and prints, then sync as the beat does."""
    placement = RentalPlacement.objects.get(rental_id=rental_id)
    NodePlacement.objects.filter(pk=placement.node_placement_id).update(state="running")
    PlacementLogLine.objects.create(placement_id=placement.node_placement_id, seq=1, stream="stdout", text="hello")
    PlacementLogLine.objects.create(
        placement_id=placement.node_placement_id, seq=2, stream="stderr", text="epoch 1/3 <b>not html</b>"
    )
    rentals_sync()
    rental_logs_stream()


def test_buyer_rents_watches_it_live_and_cancels(browser, asgi_server, tmp_path, settings):
    from playwright.sync_api import expect

    settings.PRICING_DEFAULT_ASK = "0.25"  # rounds run in this process, the estimate in the server's

    online_node(UserFactory(), name="demo rig", vgpus=2, price=250_000)
    buyer = UserFactory()
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=100 * USDC, idempotency_key="ui-buyer-funds")

    context = browser.new_context(base_url=asgi_server)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto("/accounts/login/")
        page.fill("input[name=login]", buyer.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard/")

        page.click("nav >> text=Rentals")
        page.select_option("select[name=pool]", "ada-12g")
        page.fill("input[name=vgpus]", "1")
        page.click("#estimate-button")  # no max price yet: the estimate says which field to change
        expect(page.locator("#estimate")).to_contain_text("Max price:")
        page.fill("input[name=max_price]", "1.5")
        page.fill("input[name=max_duration_minutes]", "30")
        page.fill("input[name=image]", "docker.io/library/busybox:1.36")
        page.fill("input[name=command]", "sh -c 'echo hello; sleep 60'")
        page.fill("textarea[name=env]", "EPOCHS=3\nHF_TOKEN=hf_do_not_show")
        page.click("#estimate-button")
        expect(page.locator("#estimate")).to_contain_text("0.25 USDC per vGPU-hour")

        page.click("#rent-submit")
        page.wait_for_url("**/rentals/*/")
        rental = Rental.objects.get(owner=buyer)
        assert page.url.endswith(f"/rentals/{rental.pk}/")
        assert rental.command == ["sh", "-c", "echo hello; sleep 60"]
        expect(page.locator("#rental-state")).to_have_text("Waiting for a round")
        expect(page.locator("#live-status")).to_have_text("live")
        assert "hf_do_not_show" not in page.content()
        page.evaluate("window.notReloaded = true")

        server_side(run_round, rental.pk)  # allocated, then starting once dispatched
        expect(page.locator("#rental-state")).to_have_text("Starting")
        expect(page.locator("#events tbody tr")).to_have_count(3)
        expect(page.locator("[data-money=held]")).to_have_text("0.125")  # cut to the cleared 0.25 x 30 min

        server_side(agent_reports_running_with_output, rental.pk)
        expect(page.locator("#rental-state")).to_have_text("Running")
        expect(page.locator("#rental-log .line")).to_have_text(["hello", "epoch 1/3 <b>not html</b>"])
        expect(page.locator("#rental-log .line.stderr")).to_have_count(1)
        assert page.evaluate("window.notReloaded") is True
        page.reload()  # what was pushed is also what the server renders
        expect(page.locator("#rental-log .line")).to_have_count(2)
        expect(page.locator("#placements")).to_contain_text("demo rig")
        expect(page.locator("#placements .badge.fake")).to_have_text("FAKE GPUs")
        page.screenshot(path=str(tmp_path / "rental-detail.png"), full_page=True)

        page.click("#cancel-button")
        expect(page.locator(".messages")).to_contain_text("The rental is cancelled")
        expect(page.locator("#rental-state")).to_have_text("Cancelled")
        expect(page.locator("#cancel-button")).to_have_count(0)
        rental.refresh_from_db()
        assert rental.state == RentalState.CANCELLED
    finally:
        context.close()
