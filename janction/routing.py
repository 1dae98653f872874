"""Websocket routes of every app (rentals add their live view here)."""

websocket_urlpatterns: list = []
