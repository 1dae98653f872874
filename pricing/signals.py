"""Signals other apps listen to: the rentals code starts placements when its bid is allocated."""

from django.dispatch import Signal

# Sent after the round's transaction commits, once per won bid: kwargs bid_id, round_id.
bid_allocated = Signal()
