"""The committed contract artifacts are exactly what the pinned compiler makes of the sources."""

import json
import subprocess
from pathlib import Path

from ledger.chain.artifacts import ARTIFACTS_DIR, JCT_CONTRACT, SETTLEMENT_CONTRACT, USDC_CONTRACT, load_artifact

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_committed_artifacts_match_a_fresh_compile(tmp_path):
    subprocess.run(
        ["node", "scripts/compile-contracts.js", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )

    fresh = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    committed = {path.name: path.read_bytes() for path in ARTIFACTS_DIR.glob("*.json")}
    assert sorted(fresh) == [
        "JanctionToken.json",
        "Settlement.json",
        "SettlementV1.json",
        "SettlementV2.json",
        "TestUSDC.json",
    ]
    assert fresh == committed


def test_artifacts_record_the_pinned_compiler_and_settings():
    package_lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    solc_version = package_lock["packages"]["node_modules/solc"]["version"]

    for name in (SETTLEMENT_CONTRACT, USDC_CONTRACT, JCT_CONTRACT):
        artifact = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
        assert artifact["compiler"]["version"].startswith(f"{solc_version}+commit.")
        assert artifact["compiler"]["settings"] == {"evmVersion": "cancun", "optimizer": {"enabled": True, "runs": 200}}
        assert load_artifact(name).bytecode == artifact["bytecode"]
        assert artifact["bytecode"].startswith("0x60")
