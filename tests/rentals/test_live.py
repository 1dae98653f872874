"""The rental live view over a websocket (Channels on the Redis layer): owner only, state and logs as they happen."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from janction.asgi import application
from marketplace.rentals.dispatch import rental_logs_stream
from marketplace.rentals.services import rental_cancel
from nodes.models import NodePlacement, PlacementLogLine
from tests.factories import UserFactory
from tests.rentals.conftest import run_round, submit

pytestmark = pytest.mark.django_db(transaction=True)


def communicator(rental_id: int, user=None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://testserver")]
    if user is not None:
        client = Client()
        client.force_login(user)
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, f"/ws/rentals/{rental_id}/", headers=headers)


def test_the_owner_gets_a_snapshot_then_log_lines_and_state_changes(buyer, node):
    rental = run_round(submit(buyer))
    placement = NodePlacement.objects.get(placement_id=rental.placements.get().placement_id)
    PlacementLogLine.objects.create(placement=placement, seq=1, stream="stdout", text="first")

    ws = communicator(rental.pk, buyer)

    async def scenario():
        connected, _ = await ws.connect()
        assert connected
        snapshot = await ws.receive_json_from(timeout=5)
        await sync_to_async(PlacementLogLine.objects.create)(placement=placement, seq=2, stream="stderr", text="second")
        await sync_to_async(rental_logs_stream)()
        await sync_to_async(rental_cancel)(owner=buyer, rental_id=rental.pk)
        received = [await ws.receive_json_from(timeout=5) for _ in range(2)]
        await ws.disconnect()
        await sync_to_async(connections.close_all)()
        return snapshot, received

    snapshot, (logs, state) = async_to_sync(scenario)()
    assert snapshot["type"] == "rental.snapshot" and snapshot["state"] == "starting"
    assert [line["text"] for line in snapshot["lines"]] == ["first"]
    assert logs["type"] == "rental.logs" and [(ln["stream"], ln["text"]) for ln in logs["lines"]] == [
        ("stdout", "first"),
        ("stderr", "second"),
    ]
    assert state["type"] == "rental.state" and state["state"] == "cancelled"


@pytest.mark.parametrize("who", ["anonymous", "other"])
def test_anyone_but_the_owner_is_turned_away(buyer, node, who):
    rental = submit(buyer)
    user = None if who == "anonymous" else UserFactory()
    ws = communicator(rental.pk, user)

    async def scenario():
        connected, code = await ws.connect()
        await ws.disconnect()
        await sync_to_async(connections.close_all)()
        return connected, code

    assert async_to_sync(scenario)() == (False, 4404)
