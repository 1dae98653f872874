"""Signals reputation sends and the layers above answer (it may not import them: docs/architecture.md)."""

from django.dispatch import Signal

# Sent while scoring an epoch with kwargs placement_ids (a set of placement id strings); each receiver
# returns {placement_id: renting user id} for the placements it knows. Rentals answer it (marketplace).
placement_buyers_requested = Signal()
