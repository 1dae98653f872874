"""Signals nodes sends for the layers above it, which it may not import (docs/architecture.md).

Each is sent after the writing transaction commits (or at once when no transaction is open).
"""

from django.dispatch import Signal

# Sent after the transaction commits when a node is quarantined: kwargs node_id, reason. A quarantined node
# never comes back by itself, so what runs on it is lost for good: the rentals code settles and refunds it.
node_quarantined = Signal()

# A NodeFlag was stored (a claim the platform refused: duplicated GPU UUID, usage it contradicts):
# kwargs node_id, flag_id, code, detail.
node_flagged = Signal()

# A placement reached a final state the agent reported: kwargs node_id, placement_id, state
# ("exited", "failed" or "lost"), exit_code, message.
placement_ended = Signal()

# The node's owner took the GPU from a running placement (froze it, or stopped it): kwargs node_id,
# placement_id, dedicated (the node's policy is `always`: the owner had no right to it), how ("paused" or
# "lost"), key (unique per interruption of that placement), message.
placement_interrupted = Signal()
