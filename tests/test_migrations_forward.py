"""Issue 10's model moves migrate a database made before them forward, keeping every row (SQLite and PostgreSQL).

Wallets and SIWE nonces moved from `marketplace` to `ledger`, the Proof-of-Contribution records from
`ledger` to `reputation`, the rental models from marketplace/models.py to marketplace/rentals/models.py.
Each is a state-only migration: the tables keep their names. A fresh database is built up to the
migrations before the move (the schema the old code made), given rows through that old state, and then
migrated forward by `migrate`, all in a process of its own; the current models must read the rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The leaf migrations of the moved apps before issue 10 (every later one is part of the move).
OLD_TARGETS = [("ledger", "0006_poc_epoch_bound_numeric"), ("marketplace", "0002_rentals")]

OLD_SCHEMA_AND_ROWS = f"""
import datetime
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

executor = MigrationExecutor(connection)
executor.migrate({OLD_TARGETS!r})
old = MigrationExecutor(connection).loader.project_state({OLD_TARGETS!r}).apps
User = old.get_model("auth", "User")
user = User.objects.create(username="before-the-move")
old.get_model("marketplace", "Wallet").objects.create(
    user_id=user.pk, address="0x" + "ab" * 20, chain_id=31337
)
now = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
old.get_model("marketplace", "SiweNonce").objects.create(
    user_id=user.pk, nonce="n" * 16, address="0x" + "ab" * 20, message="m", expires_at=now
)
epoch = old.get_model("ledger", "ContributionEpoch").objects.create(
    start=now, end=now + datetime.timedelta(hours=1), emission=10, distributed=7, total_score=3
)
old.get_model("ledger", "ContributionScore").objects.create(
    epoch_id=epoch.pk, user_id=user.pk, vgpu_milliseconds=1, reputation_weight=1, stake=0, stake_weight=1,
    rounds_traded=0, marginal_surplus=0, score=3, reward=7,
)
print("old schema ready")
"""

READ_BACK = """
from django.core.management import call_command
call_command("migrate", "--no-input", verbosity=0)

from ledger.models import SiweNonce, Wallet
from reputation.models import ContributionEpoch, ContributionScore
from marketplace.rentals.models import Rental

wallet = Wallet.objects.get()
assert wallet.user.username == "before-the-move" and wallet.address == "0x" + "ab" * 20, wallet
assert SiweNonce.objects.get().nonce == "n" * 16
assert ContributionEpoch.objects.get().distributed == 7
assert ContributionScore.objects.get().reward == 7
assert Rental.objects.count() == 0
print("rows kept")
"""


def _manage(env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _migrate_forward(env: dict) -> None:
    output = _manage(env, "shell", "-c", OLD_SCHEMA_AND_ROWS + READ_BACK)
    assert "old schema ready" in output and "rows kept" in output, output


def _base_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.setdefault("DJANGO_SECRET_KEY", "janction-test-only-secret-key")
    return env


@pytest.mark.slow
def test_sqlite_database_from_before_the_move_migrates_forward(tmp_path):
    _migrate_forward({**_base_env(), "JANCTION_VAR_DIR": str(tmp_path)})


@pytest.mark.slow
def test_postgresql_database_from_before_the_move_migrates_forward(tmp_path):
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        pytest.fail("This test migrates a PostgreSQL database: set DATABASE_URL=postgres://... (make test does).")
    import psycopg

    name = f"janction_forward_{uuid.uuid4().hex[:10]}"
    base = url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        _migrate_forward({**_base_env(), "DATABASE_URL": f"{base}/{name}", "JANCTION_VAR_DIR": str(tmp_path)})
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
