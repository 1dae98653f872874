"""Rentals: limits on what a buyer may ask for, log caps, and how often placements are synced and metered."""

from .env import env_int, env_str

# A rental's bid waits this long for a round before the rental expires (20 minutes by default).
RENTALS_MATCH_DEADLINE_SECONDS = env_int("RENTALS_MATCH_DEADLINE_SECONDS", 20 * 60)
# Upper bounds that catch typos: duration (30 days), vGPUs per rental, price per vGPU-hour in USDC.
RENTALS_MAX_DURATION_SECONDS = env_int("RENTALS_MAX_DURATION_SECONDS", 30 * 24 * 3600)
RENTALS_MAX_VGPUS = env_int("RENTALS_MAX_VGPUS", 64)
RENTALS_MAX_PRICE_PER_VGPU_HOUR = env_str("RENTALS_MAX_PRICE_PER_VGPU_HOUR", "10000")
# Total size of a rental's environment (keys plus values), in bytes.
RENTALS_ENV_MAX_BYTES = env_int("RENTALS_ENV_MAX_BYTES", 64 * 1024)
# Log lines a rental streams and serves (the first this many across its placements).
RENTALS_LOG_LINES_MAX = env_int("RENTALS_LOG_LINES_MAX", 10_000)
# Port every placement of a multi-node rental is told its peers listen on (JANCTION_PEERS), unless it exposes one.
RENTALS_PEER_PORT = env_int("RENTALS_PEER_PORT", 29500)
# How often placement states are read back from the agents' reports, and usage is charged.
RENTALS_SYNC_INTERVAL_SECONDS = env_int("RENTALS_SYNC_INTERVAL_SECONDS", 2)
RENTALS_METERING_INTERVAL_SECONDS = env_int("RENTALS_METERING_INTERVAL_SECONDS", 5)
# A stopped placement whose agent never confirms is settled (no more charges) after this long.
RENTALS_SETTLE_GRACE_SECONDS = env_int("RENTALS_SETTLE_GRACE_SECONDS", 60)
# A StartPlacement not delivered within this long is dropped, and a placement whose agent has not reported on it
# this long (plus RENTALS_START_REPORT_GRACE_SECONDS) after dispatch is lost (the provider's failure, requeued).
RENTALS_START_COMMAND_TTL_SECONDS = env_int("RENTALS_START_COMMAND_TTL_SECONDS", 120)
RENTALS_START_REPORT_GRACE_SECONDS = env_int("RENTALS_START_REPORT_GRACE_SECONDS", 30)
# CPU quota every placement gets per vGPU, in thousandths of a core (never unlimited).
RENTALS_CPU_MILLICORES_PER_VGPU = env_int("RENTALS_CPU_MILLICORES_PER_VGPU", 4000)
