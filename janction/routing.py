"""Websocket routes of every app (rentals add their live view here)."""

from django.urls import path

from marketplace.rentals.consumers import RentalConsumer

websocket_urlpatterns: list = [
    path("ws/rentals/<int:rental_id>/", RentalConsumer.as_asgi()),
]
