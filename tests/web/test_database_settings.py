"""Real mode's connection policies as settings: pooled for the web tier, persistent elsewhere, bad sizes refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRINT_DEFAULT = (
    "import json, django; from django.conf import settings; django.setup(); "
    "d = settings.DATABASES['default']; print(json.dumps({'age': d['CONN_MAX_AGE'], 'options': d['OPTIONS']}))"
)


def settings_with(**env) -> subprocess.CompletedProcess:
    """Load the settings in a fresh interpreter with ``env`` on top of a real-mode environment."""
    base = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "janction.settings",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/janction_settings_probe",
        "DJANGO_SECRET_KEY": "janction-test-only-secret-key",
    }
    return subprocess.run(
        [sys.executable, "-c", PRINT_DEFAULT], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_the_pool_is_bounded_and_drops_persistent_connections():
    result = settings_with(DATABASE_POOL="1", DATABASE_POOL_MAX_SIZE="5", DATABASE_APPLICATION_NAME="janction-web")

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["age"] == 0
    assert loaded["options"]["pool"]["min_size"] == 2 and loaded["options"]["pool"]["max_size"] == 5
    assert loaded["options"]["pool"]["timeout"] == 10 and loaded["options"]["application_name"] == "janction-web"


def test_without_the_pool_connections_persist_per_thread():
    result = settings_with()

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["age"] == 60 and "pool" not in loaded["options"]


def test_impossible_pool_sizes_are_refused_with_the_reason():
    too_small = settings_with(DATABASE_POOL="1", DATABASE_POOL_MAX_SIZE="0")
    inverted = settings_with(DATABASE_POOL="1", DATABASE_POOL_MIN_SIZE="9", DATABASE_POOL_MAX_SIZE="4")

    for result in (too_small, inverted):
        assert result.returncode != 0 and "need 0 <= min <= max and max >= 1" in result.stderr
