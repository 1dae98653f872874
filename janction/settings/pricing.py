"""Market rounds: how often they run, how big they get, and the reserve-price ceiling."""

from .env import env_int, env_str

# One round per pool with waiting bids every this many seconds.
PRICING_ROUND_INTERVAL_SECONDS = env_int("PRICING_ROUND_INTERVAL_SECONDS", 10)
# A rental's bid waits this long for a round before it expires (20 minutes by default).
PRICING_BID_DEADLINE_SECONDS = env_int("PRICING_BID_DEADLINE_SECONDS", 20 * 60)
# The most bids one round prices (oldest first); the rest wait for the next round.
PRICING_MAX_BIDS_PER_ROUND = env_int("PRICING_MAX_BIDS_PER_ROUND", 10_000)
# The public ceiling on reserve prices, USDC per vGPU-hour: the PVCG adjustment is computed against it.
PRICING_MAX_RESERVE_PRICE = env_str("PRICING_MAX_RESERVE_PRICE", "10000")
# A pool's default ask, USDC per vGPU-hour: the reserve price of a node enrolled without one, and the
# reference price a round trades at when no excluded ask sets a lower one (docs/pricing.md).
PRICING_DEFAULT_ASK = env_str("PRICING_DEFAULT_ASK", "1.00")
# Per-pool overrides of the default ask, "pool=price" pairs separated by commas, e.g. "ada-12g=0.30,a100-80g=1.50".
PRICING_POOL_DEFAULT_ASKS = env_str("PRICING_POOL_DEFAULT_ASKS", "")
# The market account's alert threshold, USDC: operator pages and the admin warn when its balance is below it.
PRICING_MARKET_ACCOUNT_ALERT_USDC = env_str("PRICING_MARKET_ACCOUNT_ALERT_USDC", "0")
# Proof of Contribution cap: a provider's epoch reward is at most this many JCT per USDC of platform fees its
# deliveries paid in the epoch ("" for no cap). With JCT worth at most 1/this USDC, trading with yourself from a
# second account never pays (docs/proof-of-contribution.md).
POC_MAX_JCT_PER_USDC_FEE = env_str("POC_MAX_JCT_PER_USDC_FEE", "1")
