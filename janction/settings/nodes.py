"""The agent gateway: platform CA, listen addresses, heartbeat batching, offline detection, command delivery."""

from django.core.exceptions import ImproperlyConfigured

from .env import env_int, env_list, env_str


def _env_seconds(name: str, default: float) -> float:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number of seconds.") from exc
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be positive, got {raw!r}.")
    return value


# The platform CA (PEM text, or file paths). Neither set: generated under VAR_DIR/ca in the embedded default.
AGENT_CA_CERT_PEM = env_str("AGENT_CA_CERT_PEM")
AGENT_CA_KEY_PEM = env_str("AGENT_CA_KEY_PEM")
AGENT_CA_CERT_FILE = env_str("AGENT_CA_CERT_FILE")
AGENT_CA_KEY_FILE = env_str("AGENT_CA_KEY_FILE")
# How long a node's client certificate is valid; the node enrolls again (new node) after that.
AGENT_CLIENT_CERT_DAYS = env_int("AGENT_CLIENT_CERT_DAYS", 365)

# Connect (mutual TLS) and Enroll (server-authenticated TLS) listen on separate ports. The enrollment
# address is the one providers are told (AGENT_GATEWAY_PUBLIC_ADDRESS); EnrollResponse.connect_address
# tells the agent where Connect is: ":PORT" (same host) by default.
AGENT_GATEWAY_LISTEN = env_str("AGENT_GATEWAY_LISTEN", "127.0.0.1:50052")
AGENT_GATEWAY_ENROLL_LISTEN = env_str("AGENT_GATEWAY_ENROLL_LISTEN", "127.0.0.1:50051")
AGENT_GATEWAY_CONNECT_ADDRESS = env_str("AGENT_GATEWAY_CONNECT_ADDRESS")
# Extra host names or IPs in the gateway's server certificate (127.0.0.1 and localhost are always in).
AGENT_GATEWAY_TLS_NAMES = env_list("AGENT_GATEWAY_TLS_NAMES", [])
# Concurrent Connect streams one gateway process accepts, and its database worker threads.
AGENT_GATEWAY_MAX_STREAMS = env_int("AGENT_GATEWAY_MAX_STREAMS", 1000)
AGENT_GATEWAY_DB_WORKERS = env_int("AGENT_GATEWAY_DB_WORKERS", 8)
# Seconds open streams get to finish on SIGTERM/SIGINT.
AGENT_GATEWAY_STOP_GRACE_SECONDS = _env_seconds("AGENT_GATEWAY_STOP_GRACE_SECONDS", 5.0)
# Heartbeats are buffered in memory and written in one bulk update this often.
AGENT_HEARTBEAT_FLUSH_SECONDS = _env_seconds("AGENT_HEARTBEAT_FLUSH_SECONDS", 2.0)
# How often the gateway looks for queued commands (NodeCommand) of the nodes it holds streams of.
AGENT_COMMAND_POLL_SECONDS = _env_seconds("AGENT_COMMAND_POLL_SECONDS", 0.25)
# Usage intervals may end at most this far in the future of the gateway's clock.
AGENT_USAGE_MAX_CLOCK_SKEW_SECONDS = env_int("AGENT_USAGE_MAX_CLOCK_SKEW_SECONDS", 120)
# Usage may start at most this long before the platform queued the placement, or end this long after the
# platform recorded its end (agents' clocks are NTP-synchronised; this bounds any backdating).
AGENT_USAGE_START_TOLERANCE_SECONDS = env_int("AGENT_USAGE_START_TOLERANCE_SECONDS", 5)

# A node that sent no heartbeat for this long goes offline with its vGPUs; checked this often
# by Celery beat (and by every running gateway).
# Worst case from a node's death to "offline": heartbeat interval (5 s, the agent's default) + grace +
# check interval + flush = 5 + 15 + 5 + 2 = 27 s <= 30 s (asserted in tests/nodes/test_gateway_hardening.py).
NODE_HEARTBEAT_GRACE_SECONDS = _env_seconds("NODE_HEARTBEAT_GRACE_SECONDS", 15.0)
NODE_OFFLINE_CHECK_INTERVAL_SECONDS = _env_seconds("NODE_OFFLINE_CHECK_INTERVAL_SECONDS", 5.0)
# After the gateway starts (or its database comes back) no node is judged for this long: agents may still
# be in reconnect backoff (capped at 30 s) and the gateway could not record heartbeats before.
NODE_GATEWAY_START_GRACE_SECONDS = _env_seconds("NODE_GATEWAY_START_GRACE_SECONDS", 45.0)

# -- Hardening: what one node (or one unauthenticated client) may cost the gateway --------------------------
# Concurrent calls on the enrollment port (Enroll and health checks, no client certificate needed),
# kept apart from the Connect port's AGENT_GATEWAY_MAX_STREAMS so neither can starve the other.
AGENT_GATEWAY_MAX_UNAUTHENTICATED = env_int("AGENT_GATEWAY_MAX_UNAUTHENTICATED", 64)
# Seconds a new Connect stream has to send its Hello before it is closed.
AGENT_FIRST_MESSAGE_SECONDS = _env_seconds("AGENT_FIRST_MESSAGE_SECONDS", 10.0)
# Concurrent Connect calls one certificate may hold (an agent needs one; a reconnect briefly makes two).
AGENT_STREAMS_PER_CERTIFICATE = env_int("AGENT_STREAMS_PER_CERTIFICATE", 3)
# Messages per second a node may send on average, and the burst it may send at once (token bucket);
# an agent reconnecting resends its unacknowledged usage reports, hence the generous burst.
AGENT_MESSAGES_PER_SECOND = _env_seconds("AGENT_MESSAGES_PER_SECOND", 50.0)
AGENT_MESSAGES_BURST = env_int("AGENT_MESSAGES_BURST", 500)
# A node that sends more than AGENT_BAD_MESSAGES_MAX refused messages within AGENT_BAD_MESSAGES_WINDOW_SECONDS
# is disconnected, and its reconnects are refused (RESOURCE_EXHAUSTED) for AGENT_PENALTY_SECONDS.
AGENT_BAD_MESSAGES_MAX = env_int("AGENT_BAD_MESSAGES_MAX", 20)
AGENT_BAD_MESSAGES_WINDOW_SECONDS = _env_seconds("AGENT_BAD_MESSAGES_WINDOW_SECONDS", 60.0)
AGENT_PENALTY_SECONDS = _env_seconds("AGENT_PENALTY_SECONDS", 60.0)
# Log lines and bytes stored per placement; what is beyond is dropped (the placement is marked truncated).
AGENT_LOG_LINES_PER_PLACEMENT = env_int("AGENT_LOG_LINES_PER_PLACEMENT", 100_000)
AGENT_LOG_BYTES_PER_PLACEMENT = env_int("AGENT_LOG_BYTES_PER_PLACEMENT", 32 * 1024 * 1024)
# While the database is away, a stream's usage report or status is retried with this longest pause
# (the stream stays open; gRPC flow control holds the agent's later messages meanwhile).
AGENT_DATABASE_RETRY_MAX_SECONDS = _env_seconds("AGENT_DATABASE_RETRY_MAX_SECONDS", 5.0)
# Colocation: how often scheduled nodes are checked for a window that opened or closed (their agents are told).
NODE_AVAILABILITY_PUSH_SECONDS = _env_seconds("NODE_AVAILABILITY_PUSH_SECONDS", 10.0)

# GPU telemetry history for the rental and node charts (nodes/telemetry.py): one sample per GPU per interval.
NODES_GPU_TELEMETRY_INTERVAL_SECONDS = _env_seconds("NODES_GPU_TELEMETRY_INTERVAL_SECONDS", 10.0)
NODES_GPU_TELEMETRY_RETENTION_DAYS = int(_env_seconds("NODES_GPU_TELEMETRY_RETENTION_DAYS", 7))

# The overlay network (docs/overlay.md). Node addresses come from OVERLAY_NETWORK (the hub takes the first
# host address); each segment gets a /24 of OVERLAY_SEGMENT_NETWORK chosen by its VNI, so VNIs run from 1 to
# the number of /24s in it. Nothing is sent to agents until an `overlay_hub` process has registered.
OVERLAY_NETWORK = env_str("OVERLAY_NETWORK", "100.64.0.0/16")
OVERLAY_SEGMENT_NETWORK = env_str("OVERLAY_SEGMENT_NETWORK", "10.128.0.0/9")
OVERLAY_MTU = env_int("OVERLAY_MTU", 1420)
OVERLAY_KEEPALIVE_SECONDS = env_int("OVERLAY_KEEPALIVE_SECONDS", 25)
