"""Janction's own knobs: mode, fees, ledger and idempotency."""

from .database import DATABASE_URL
from .env import env_bool, env_int, env_str

# The embedded default (no DATABASE_URL) turns on demo-only features such as the faucet.
JANCTION_EMBEDDED = env_bool("JANCTION_EMBEDDED", default=not DATABASE_URL)

# Platform fee on every buyer charge, in basis points (500 = 5%).
JANCTION_PLATFORM_FEE_BPS = env_int("JANCTION_PLATFORM_FEE_BPS", 500)

# Faucet: the most one demo deposit may credit, in whole currency units.
JANCTION_FAUCET_MAX_UNITS = env_int("JANCTION_FAUCET_MAX_UNITS", 10_000)

# Nodes: how long an enrollment token lives, and where providers' agents dial the gateway.
NODE_ENROLLMENT_TOKEN_TTL_SECONDS = env_int("NODE_ENROLLMENT_TOKEN_TTL_SECONDS", 24 * 3600)
AGENT_GATEWAY_PUBLIC_ADDRESS = env_str("AGENT_GATEWAY_PUBLIC_ADDRESS", "127.0.0.1:50051")

# Completed Idempotency-Key responses are replayed for this long, then purged (hourly).
JANCTION_IDEMPOTENCY_TTL_HOURS = env_int("JANCTION_IDEMPOTENCY_TTL_HOURS", 24)
