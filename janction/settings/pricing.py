"""Market rounds: how often they run, how big they get, and the reserve-price ceiling."""

from .env import env_int, env_str

# One round per pool with waiting bids every this many seconds.
PRICING_ROUND_INTERVAL_SECONDS = env_int("PRICING_ROUND_INTERVAL_SECONDS", 10)
# A rental's bid waits this long for a round before it expires (DESIGN.md: 20 minutes).
PRICING_BID_DEADLINE_SECONDS = env_int("PRICING_BID_DEADLINE_SECONDS", 20 * 60)
# The most bids one round prices (oldest first); the rest wait for the next round.
PRICING_MAX_BIDS_PER_ROUND = env_int("PRICING_MAX_BIDS_PER_ROUND", 10_000)
# The public ceiling on reserve prices, USDC per vGPU-hour: the PVCG adjustment is computed against it.
PRICING_MAX_RESERVE_PRICE = env_str("PRICING_MAX_RESERVE_PRICE", "10000")
