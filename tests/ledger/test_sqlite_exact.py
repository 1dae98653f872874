"""The embedded default's SQLite keeps money exact too (its numbers have only 15 significant digits)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
from ledger.fields import ExactSum
from ledger.models import Account, Entry
from ledger.services import ledger_account_get, ledger_deposit, ledger_hold
from tests.factories import UserFactory

user = UserFactory()
big = 12_345_678_123_456_789_012_345_678  # 12,345,678.123456789012345678 JCT
ledger_deposit(user_id=user.pk, currency="JCT", amount=big, idempotency_key="deposit")
ledger_hold(user_id=user.pk, currency="JCT", amount=1, idempotency_key="hold")
available = ledger_account_get(user_id=user.pk, kind="available", currency="JCT").balance
assert available == big - 1, available
assert Entry.objects.aggregate(total=ExactSum("amount"))["total"] == 0
assert Entry.objects.filter(amount__gt=0).aggregate(total=ExactSum("amount"))["total"] == big + 1
assert list(Account.objects.filter(balance__lt=0).values_list("kind", flat=True)) == ["chain_clearing"]
print("exact")
"""


def test_sqlite_stores_and_sums_jct_base_units_exactly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["JANCTION_VAR_DIR"] = str(tmp_path)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    result = subprocess.run([*manage, "shell", "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("exact")
