"""Reputation: how evidence is weighed and forgotten, the cold start, and where scores act (docs/reputation.md)."""

from .env import env_bool, env_int, env_str

# Evidence loses half its weight every this many days (exponential forgetting of the Beta reputation).
REPUTATION_HALF_LIFE_DAYS = env_int("REPUTATION_HALF_LIFE_DAYS", 30)
# The Beta prior (pseudo-counts of good and bad evidence): a subject with no evidence scores
# PRIOR_POSITIVE / (PRIOR_POSITIVE + PRIOR_NEGATIVE) = 0.5 by default, above every default minimum below.
REPUTATION_PRIOR_POSITIVE = env_str("REPUTATION_PRIOR_POSITIVE", "1")
REPUTATION_PRIOR_NEGATIVE = env_str("REPUTATION_PRIOR_NEGATIVE", "1")
# Asks of nodes scoring below this do not enter a pool's rounds ("0" lets every node in).
REPUTATION_POOL_MIN_SCORE = env_str("REPUTATION_POOL_MIN_SCORE", "0.2")
# Per-pool overrides, "pool=score" pairs separated by commas, e.g. "a100-80g=0.6".
REPUTATION_POOL_MIN_SCORES = env_str("REPUTATION_POOL_MIN_SCORES", "")
# Among nodes that fit a winning bid equally well, the higher-scoring node gets the placement.
REPUTATION_PLACEMENT_TIE_BREAK = env_bool("REPUTATION_PLACEMENT_TIE_BREAK", True)
# Proof of Contribution weighs a provider's delivered hours by its score (False: every provider weighs 1).
REPUTATION_POC_WEIGHTS = env_bool("REPUTATION_POC_WEIGHTS", True)
# A complete UTC day is folded into the stored scores only this long after it ended (late commits land first).
REPUTATION_FOLD_GRACE_SECONDS = env_int("REPUTATION_FOLD_GRACE_SECONDS", 600)
# How often the evidence collector (uptime, telemetry, missed signals) and the daily fold run.
REPUTATION_COLLECT_INTERVAL_SECONDS = env_int("REPUTATION_COLLECT_INTERVAL_SECONDS", 300)
# Verification challenges: the image and size of the matrix product (reputation/challenge_math.py), how long a node
# has to answer, and how many failures within the window quarantine it.
REPUTATION_CHALLENGE_IMAGE = env_str("REPUTATION_CHALLENGE_IMAGE", "docker.io/library/busybox:1.36")
REPUTATION_CHALLENGE_SIZE = env_int("REPUTATION_CHALLENGE_SIZE", 32)
REPUTATION_CHALLENGE_TIMEOUT_SECONDS = env_int("REPUTATION_CHALLENGE_TIMEOUT_SECONDS", 600)
REPUTATION_CHALLENGE_FAILURES_TO_QUARANTINE = env_int("REPUTATION_CHALLENGE_FAILURES_TO_QUARANTINE", 2)
REPUTATION_CHALLENGE_WINDOW_DAYS = env_int("REPUTATION_CHALLENGE_WINDOW_DAYS", 7)
# The challenge schedule (Celery beat, reputation.challenges_schedule): each online node with a free vGPU is challenged
# this many times a day (0: no scheduled challenges), each node at its own secret phase
# within the period so that nodes are not all challenged at once; the task runs every ..._SCHEDULE_SECONDS.
REPUTATION_CHALLENGES_PER_NODE_PER_DAY = env_int("REPUTATION_CHALLENGES_PER_NODE_PER_DAY", 4)
REPUTATION_CHALLENGE_SCHEDULE_SECONDS = env_int("REPUTATION_CHALLENGE_SCHEDULE_SECONDS", 300)
# Staking gate: a node's asks enter a pool's rounds only while its provider's JCT stake is at least this many JCT
# ("0": no gate). Per-pool overrides "pool=JCT" pairs separated by commas. The stake is the ledger-level stake
# (ledger.staking) in the embedded default (no CHAIN_RPC_URL), and the on-chain stake as the chain watcher recorded
# it (staked less unstake requests and slashes) in real mode.
REPUTATION_POOL_MIN_STAKE_JCT = env_str("REPUTATION_POOL_MIN_STAKE_JCT", "0")
REPUTATION_POOL_MIN_STAKES_JCT = env_str("REPUTATION_POOL_MIN_STAKES_JCT", "")
# Ledger-level stake: how long an unstake request waits (still slashable) before the JCT is available again. Longer
# than the dispute window (RENTALS_DISPUTE_WINDOW_HOURS, 72 h) so a stake cannot leave before a dispute is decided.
LEDGER_UNSTAKE_COOLDOWN_SECONDS = env_int("LEDGER_UNSTAKE_COOLDOWN_SECONDS", 7 * 86_400)
# How often the unstake requests whose cool-down is over are released (Celery beat).
LEDGER_UNSTAKE_RELEASE_INTERVAL_SECONDS = env_int("LEDGER_UNSTAKE_RELEASE_INTERVAL_SECONDS", 600)
