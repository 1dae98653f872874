"""Flags: evidence against a node for operators, announced to the layers above (nodes.signals.node_flagged)."""

import logging

from django.db import transaction

from nodes.models import NodeFlag
from nodes.signals import node_flagged

AGENT_LOG = logging.getLogger("nodes.agent")


def node_flag(*, node_id: int, code: str, detail: str) -> None:
    """Record evidence against a node for operators (in its own transaction: it outlives a refused write)."""
    flag = NodeFlag.objects.create(node_id=node_id, code=code[:40], detail=detail[:500])
    AGENT_LOG.warning("node %s flagged (%s): %s", node_id, code, detail)
    transaction.on_commit(
        lambda: node_flagged.send(sender=NodeFlag, node_id=node_id, flag_id=flag.pk, code=flag.code, detail=flag.detail)
    )
