"""Load the contract artifacts that scripts/compile-contracts.js writes to contracts/artifacts."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"

SETTLEMENT_CONTRACT = "Settlement"
# The first Settlement: the gas baseline, and what a migration reads claimed amounts from.
SETTLEMENT_V1_CONTRACT = "SettlementV1"
# The second: claimed amounts per index (uint128, two to a word); the gas baseline of the third and a migration source.
SETTLEMENT_V2_CONTRACT = "SettlementV2"
USDC_CONTRACT = "TestUSDC"
JCT_CONTRACT = "JanctionToken"


@dataclass(frozen=True)
class Artifact:
    """A compiled contract: its ABI, creation bytecode and the compiler that produced them."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    compiler_version: str


@functools.cache
def load_artifact(name: str) -> Artifact:
    """Read the committed artifact of contract ``name``."""
    data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        compiler_version=data["compiler"]["version"],
    )
