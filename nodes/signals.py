"""Signals the nodes app sends so that upper layers (reputation) learn of events without nodes importing them.

Each is sent after the writing transaction commits (or at once when no transaction is open).
"""

from django.dispatch import Signal

# A NodeFlag was stored (a claim the platform refused: duplicated GPU UUID, usage it contradicts):
# kwargs node_id, flag_id, code, detail.
node_flagged = Signal()

# A placement reached a final state the agent reported: kwargs node_id, placement_id, state
# ("exited", "failed" or "lost"), exit_code, message.
placement_ended = Signal()
