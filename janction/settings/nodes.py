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

# A node that sent no heartbeat for this long goes offline with its vGPUs; checked this often
# by Celery beat (and by every running gateway).
NODE_HEARTBEAT_GRACE_SECONDS = _env_seconds("NODE_HEARTBEAT_GRACE_SECONDS", 30.0)
NODE_OFFLINE_CHECK_INTERVAL_SECONDS = _env_seconds("NODE_OFFLINE_CHECK_INTERVAL_SECONDS", 10.0)
