"""The gateway's Prometheus counters (docs/metrics.md).

Start the gateway with PROMETHEUS_MULTIPROC_DIR=$JANCTION_METRICS_DIR/gateway (an emptied folder) and the web
tier's /metrics serves these beside its own; without it they stay in the gateway's process, unread.
"""

import os

from prometheus_client import Counter

if _directory := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(_directory, exist_ok=True)

STREAMS = Counter(
    "janction_gateway_streams_total", "Agent Connect streams, opened and closed (open = opened - closed).", ["event"]
)
MESSAGES = Counter("janction_gateway_messages_total", "Messages agents sent, by kind.", ["kind"])
REFUSED = Counter("janction_gateway_refused_total", "Agent messages the gateway refused, by what they were.", ["what"])
COMMANDS = Counter("janction_gateway_commands_delivered_total", "Queued commands written to agents' streams.")
