"""Each pytest-xdist worker talks to its own Redis database and test database (docs/testing.md).

Without xdist these hold trivially (worker None keeps REDIS_URL as it is); under `make test` (`pytest -n`)
they prove that the cache, the channel layer, Celery and the servers started in subprocesses all use the
worker's own Redis database, so that one worker's cache.clear() never empties another's.
"""

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import worker_redis_url, xdist_worker_index


def test_worker_redis_url_adds_the_worker_number_to_the_database():
    assert worker_redis_url("redis://127.0.0.1:6379/1", None) == "redis://127.0.0.1:6379/1"
    assert worker_redis_url("redis://127.0.0.1:6379/1", 0) == "redis://127.0.0.1:6379/1"
    assert worker_redis_url("redis://127.0.0.1:6379/1", 2) == "redis://127.0.0.1:6379/3"
    assert worker_redis_url("redis://127.0.0.1:6379", 1) == "redis://127.0.0.1:6379/1"
    with pytest.raises(pytest.UsageError, match="Redis has 16"):
        worker_redis_url("redis://127.0.0.1:6379/14", 3)


def test_this_worker_uses_its_own_redis_database_everywhere(db, pytestconfig):
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("This test checks each worker's Redis database: set REDIS_URL=redis://... (make test does).")
    from channels.layers import get_channel_layer
    from django.core.cache import cache

    from janction.celery import app

    index = xdist_worker_index(pytestconfig)
    database = int(url.rsplit("/", 1)[1])
    cache.set("parallel-isolation-probe", index)
    assert cache._cache.get_client("parallel-isolation-probe").connection_pool.connection_kwargs["db"] == database
    assert settings.CACHES["default"]["LOCATION"] == url
    assert app.conf.broker_url == url
    assert get_channel_layer().hosts[0]["address"] == url
    # An idle consumer's blocking pop must end before its read times out (see janction/settings/async_.py).
    assert get_channel_layer().hosts[0]["socket_timeout"] > get_channel_layer().brpop_timeout
    # A subprocess (a server the test starts) inherits the worker's database with the environment.
    code = "import os; print(os.environ['REDIS_URL'])"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == url
    if index is not None:
        assert connection.settings_dict["NAME"].endswith(f"_gw{index}")
