"""On-chain settlement: the chain connection, confirmations and the settlement/watcher schedules.

Without CHAIN_RPC_URL the *embedded default* runs web3's in-process eth-tester chain (a fake chain
that lives and dies with the process) and deploys the contracts on first use. With CHAIN_RPC_URL set
(*real mode*) the operator key and the three deployed addresses are required; `manage.py chain_deploy`
deploys them to a fresh chain and prints the lines to set.
"""

from django.core.exceptions import ImproperlyConfigured

from .env import env_int, env_str

# JSON-RPC endpoint of the chain node (http:// or https://). Empty: the embedded in-process chain.
CHAIN_RPC_URL = env_str("CHAIN_RPC_URL")
# Hex private key of the account holding OPERATOR_ROLE (posts batches). Environment only, never in files.
CHAIN_OPERATOR_KEY = env_str("CHAIN_OPERATOR_KEY")
# Hex private key of the account holding SLASHER_ROLE (slashes stake after an upheld dispute): neither the
# operator's posting key nor the guardian's. Environment only. Empty in real mode: slashing on chain is refused.
CHAIN_SLASHER_KEY = env_str("CHAIN_SLASHER_KEY")
# Addresses printed by `manage.py chain_deploy`.
CHAIN_SETTLEMENT_ADDRESS = env_str("CHAIN_SETTLEMENT_ADDRESS")
CHAIN_USDC_ADDRESS = env_str("CHAIN_USDC_ADDRESS")
CHAIN_JCT_ADDRESS = env_str("CHAIN_JCT_ADDRESS")
# A paused Settlement (version 1 or 2) this deployment replaces: the first batch on the new contract carries what each
# allocation claimed there as its leaves' paid_before (ledger/settlement/migration.py). Empty: a fresh deployment.
CHAIN_MIGRATED_FROM_ADDRESS = env_str("CHAIN_MIGRATED_FROM_ADDRESS")
# First block the watcher scans (the Settlement deployment block; chain_deploy prints it).
CHAIN_START_BLOCK = env_int("CHAIN_START_BLOCK", 0)
# Blocks mined on top of an event before it is credited: 2 suits development chains, use 12+ on mainnets.
CHAIN_CONFIRMATIONS = env_int("CHAIN_CONFIRMATIONS", 2)
# The most blocks one eth_getLogs request of the watcher covers.
CHAIN_WATCH_MAX_BLOCKS = env_int("CHAIN_WATCH_MAX_BLOCKS", 2_000)
# How long to wait for a batch transaction's receipt before calling it stuck and retrying.
CHAIN_RECEIPT_TIMEOUT_SECONDS = env_int("CHAIN_RECEIPT_TIMEOUT_SECONDS", 120)

# Celery beat periods (janction/settings/schedule.py): a settlement batch every 10 minutes, a watcher scan every 15 s.
SETTLEMENT_BATCH_INTERVAL_SECONDS = env_int("SETTLEMENT_BATCH_INTERVAL_SECONDS", 600)
CHAIN_WATCH_INTERVAL_SECONDS = env_int("CHAIN_WATCH_INTERVAL_SECONDS", 15)

if CHAIN_RPC_URL:
    _missing = [
        name
        for name in ("CHAIN_OPERATOR_KEY", "CHAIN_SETTLEMENT_ADDRESS", "CHAIN_USDC_ADDRESS", "CHAIN_JCT_ADDRESS")
        if not globals()[name]
    ]
    if _missing:
        raise ImproperlyConfigured(
            f"CHAIN_RPC_URL is set, so {', '.join(_missing)} must be set too (run `manage.py chain_deploy`)."
        )

# Proof of Contribution (docs/proof-of-contribution.md): epochs of POC_EPOCH_SECONDS aligned to the Unix epoch
# (default: UTC days), each emitting POC_EMISSION_JCT (a decimal string of whole JCT) pro rata by score.
POC_EPOCH_SECONDS = env_int("POC_EPOCH_SECONDS", 86_400)
POC_EMISSION_JCT = env_str("POC_EMISSION_JCT", "1000")
# Score points per USDC/hour of leave-one-out marginal surplus (one delivered vGPU-hour is one point).
POC_SURPLUS_POINTS_PER_USDC = env_str("POC_SURPLUS_POINTS_PER_USDC", "1")
# Seconds after an epoch ends before it is scored, so that late usage reports still count.
POC_GRACE_SECONDS = env_int("POC_GRACE_SECONDS", 900)
