"""Connect the lower layers' signals and hooks to reputation (they never import it)."""

import logging

from nodes.signals import node_flagged, placement_ended, placement_interrupted
from pricing.standing import standing_source_set
from reputation.acts import pool_standing
from reputation.collect import flag_evidence, interruption_evidence, placement_evidence

logger = logging.getLogger(__name__)


def on_node_flagged(sender, node_id: int, flag_id: int, code: str, detail: str, **kwargs) -> None:
    try:
        flag_evidence(node_id=node_id, flag_id=flag_id, code=code, detail=detail)
    except Exception:
        logger.exception("flag %s of node %s: no evidence recorded; the collector retries", flag_id, node_id)


def on_placement_ended(sender, node_id: int, placement_id: str, state: str, message: str = "", **kwargs) -> None:
    try:
        placement_evidence(node_id=node_id, placement_id=placement_id, state=state, message=message)
    except Exception:
        logger.exception("placement %s: no evidence recorded; the collector retries", placement_id)


def on_placement_interrupted(
    sender, node_id: int, placement_id: str, dedicated: bool, how: str, key: str, message: str = "", **kwargs
) -> None:
    try:
        interruption_evidence(
            node_id=node_id, placement_id=placement_id, dedicated=dedicated, how=how, key=key, message=message
        )
    except Exception:
        logger.exception("placement %s interrupted by the owner: no evidence recorded", placement_id)


def connect() -> None:
    node_flagged.connect(on_node_flagged, dispatch_uid="reputation.on_node_flagged")
    placement_ended.connect(on_placement_ended, dispatch_uid="reputation.on_placement_ended")
    placement_interrupted.connect(on_placement_interrupted, dispatch_uid="reputation.on_placement_interrupted")
    standing_source_set(pool_standing)
