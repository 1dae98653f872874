"""Signals nodes sends for the layers above it, which it may not import (docs/architecture.md)."""

from django.dispatch import Signal

# Sent after the transaction commits when a node is quarantined: kwargs node_id, reason. A quarantined node
# never comes back by itself, so what runs on it is lost for good: the rentals code settles and refunds it.
node_quarantined = Signal()
