"""The live view of one rental over a websocket: its state changes and log lines, for its owner only."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from marketplace.rentals.errors import RentalNotFound
from marketplace.rentals.selectors import rental_for_owner, rental_log_lines
from marketplace.rentals.services import rental_group

# Close code for "no such rental, or not yours" (4000-4999 are the application's).
CLOSE_NOT_FOUND = 4404


@database_sync_to_async
def _snapshot(user, rental_id: int) -> dict | None:
    try:
        rental = rental_for_owner(owner=user, rental_id=rental_id)
    except RentalNotFound:
        return None
    lines = [
        {"placement": line.placement.placement_id, "seq": line.seq, "stream": line.stream, "text": line.text}
        for line in rental_log_lines(rental=rental)
    ]
    return {
        "type": "rental.snapshot",
        "id": rental.pk,
        "state": rental.state,
        "reason": rental.state_reason,
        "lines": lines,
    }


class RentalConsumer(AsyncJsonWebsocketConsumer):
    """Send a snapshot (state and the log so far) on connect, then every change as it happens."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        rental_id = int(self.scope["url_route"]["kwargs"]["rental_id"])
        snapshot = await _snapshot(user, rental_id) if user is not None and user.is_authenticated else None
        if snapshot is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = rental_group(rental_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Ignore what the client sends: the view is read-only."""

    async def rental_state(self, event: dict) -> None:
        await self.send_json(event)

    async def rental_logs(self, event: dict) -> None:
        await self.send_json(event)

    async def rental_settled(self, event: dict) -> None:
        await self.send_json(event)
