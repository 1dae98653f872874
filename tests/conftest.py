"""Fixtures shared by every test: users, API clients per role; the session's speed settings (docs/testing.md)."""

import json
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

# Test users' passwords are hashed with this many PBKDF2 rounds instead of Django's 1,000,000 (0.7 s per hash on
# a loaded 2-core machine, paid by every UserFactory and log-in). The hashes stay standard pbkdf2_sha256 ones, so
# the servers the tests start in subprocesses (daphne, granian, `make run`) still verify them.
TEST_PBKDF2_ITERATIONS = 1_000


def xdist_worker_index(config) -> int | None:
    """Return this pytest-xdist worker's number (gw0 is 0), or None when the tests run in one process.

    It asks the configuration, not the PYTEST_XDIST_WORKER variable, which a pytest started by a test inherits.
    """
    worker = getattr(config, "workerinput", {}).get("workerid", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def worker_redis_url(url: str, index: int | None) -> str:
    """Return the Redis URL of worker `index`: REDIS_URL's database number plus the worker's number."""
    if not index:
        return url
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) + index
    if database > 15:
        raise pytest.UsageError(
            f"pytest-xdist worker gw{index} would use Redis database {database} (REDIS_URL {url} plus {index}); "
            "Redis has 16 (0-15): use a lower database in REDIS_URL or fewer workers (-n)."
        )
    return urlunsplit(parts._replace(path=f"/{database}"))


def _address(host) -> str | None:
    """Return a channel layer host's Redis URL (a host is a URL or a dict with "address" and connection options)."""
    return host.get("address") if isinstance(host, dict) else None


# Seconds each test file took in a parallel run (written by scripts/test_durations.py); see the hook below.
DURATIONS = Path(__file__).with_name("durations.json")
# A file the figures do not know yet is assumed to take this long per test.
UNKNOWN_SECONDS_PER_TEST = 0.5


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, put the slowest test files first, so that the workers take them first.

    `--dist loadfile` hands each idle worker the next whole file in collection order (pytest-xdist would reorder
    the files by their number of tests, which puts a long file of one or two real-process tests last). The run
    ends when the last file does: starting the long files first leaves only short ones for the end, where they
    even out the workers (longest-processing-time-first scheduling). Within a file the order stays as written.
    A run in one process keeps pytest's own order.
    """
    if xdist_worker_index(config) is None:
        return
    known = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def seconds(name: str) -> float:
        return known.get(name, UNKNOWN_SECONDS_PER_TEST * len(files[name]))

    items[:] = [item for name in sorted(files, key=lambda name: -seconds(name)) for item in files[name]]


def pytest_configure(config):
    """Under pytest-xdist, give each worker its own Redis database (gwN uses REDIS_URL's database + N).

    Every test starts with cache.clear(), which empties the whole Redis database, and the cache, the channel
    layer and Celery share it: workers sharing one would wipe each other's throttles, groups and queues. The
    settings are read lazily, so changing them here (before the first test) is enough for this process; the
    environment variable carries the worker's database to the servers the tests start in subprocesses.
    pytest-django gives each worker its own test database (test_<name>_gwN) by itself.
    """
    if hasattr(config.option, "loadscopereorder"):  # keep the order pytest_collection_modifyitems chose
        config.option.loadscopereorder = False
    index = xdist_worker_index(config)
    url = os.environ.get("REDIS_URL")
    if not index or not url:
        return
    from django.conf import settings

    own = worker_redis_url(url, index)
    os.environ["REDIS_URL"] = own
    if not settings.configured:
        return
    from django.core.signals import setting_changed

    def swapped(config: dict, key: str) -> dict:
        return {**config, key: own} if config.get(key) == url else config

    changed = {name: own for name in ("REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    changed = {name: value for name, value in changed.items() if getattr(settings, name, None) == url}
    changed["CACHES"] = {alias: swapped(cache, "LOCATION") for alias, cache in settings.CACHES.items()}
    layers = {}
    for alias, layer in getattr(settings, "CHANNEL_LAYERS", {}).items():
        hosts = layer.get("CONFIG", {}).get("hosts") or []
        hosts = [own if h == url else {**h, "address": own} if _address(h) == url else h for h in hosts]
        layers[alias] = {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}}
        layers[alias] = layers[alias] if hosts else layer
    changed["CHANNEL_LAYERS"] = layers
    for name, value in changed.items():
        setattr(settings, name, value)
        # Django's and Channels' own receivers drop any cache or channel layer already built from the old value.
        setting_changed.send(sender=type(settings._wrapped), setting=name, value=value, enter=True)
    from janction.celery import app

    app.conf.broker_url = settings.CELERY_BROKER_URL
    app.conf.result_backend = settings.CELERY_RESULT_BACKEND


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """Hash test passwords with few PBKDF2 rounds (the algorithm and format stay the production ones)."""
    try:
        from django.conf import settings

        configured = settings.configured
    except ImportError:  # pure tests run with `-p no:django` may have no Django at all
        configured = False
    if not configured:
        yield
        return
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    previous = PBKDF2PasswordHasher.iterations
    PBKDF2PasswordHasher.iterations = TEST_PBKDF2_ITERATIONS
    yield
    PBKDF2PasswordHasher.iterations = previous


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test databases, with commits that do not wait for the disk.

    synchronous_commit=off changes durability after a PostgreSQL crash only, never what a transaction sees, and
    it is set on the test database itself so that the servers the tests start in subprocesses get it too. It
    makes the many commits of transactional tests (and the TRUNCATE that ends each of them) several times cheaper.
    """
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    name = connection.ops.quote_name(connection.settings_dict["NAME"])
                    cursor.execute(f"ALTER DATABASE {name} SET synchronous_commit TO off")
                    cursor.execute("SET synchronous_commit TO off")
    with pytest.MonkeyPatch.context() as patch:
        from django.db.backends.postgresql.operations import DatabaseOperations

        patch.setattr(DatabaseOperations, "sql_flush", _sql_flush_by_delete(DatabaseOperations.sql_flush))
        yield


def _sql_flush_by_delete(truncate):
    """Return PostgreSQL's sql_flush emptying the tables with DELETE instead of TRUNCATE (the default flush).

    Django empties the database after every transactional test (`transaction=True`, `transactional_db`,
    `live_server`) with one TRUNCATE of all its tables. TRUNCATE replaces every table's and index's files, which
    took 0.5 to 2 s on the loaded 2-core machine each time; DELETE of the few rows a test leaves takes
    milliseconds. Both empty every table in one transaction; the foreign keys Django creates are all
    DEFERRABLE INITIALLY DEFERRED (checked when the transaction commits, so the order of the DELETEs does not
    matter), and the schema has no DELETE triggers or rules. Sequences are left alone in both. A flush that
    resets the sequences or cascades (neither is used here) keeps TRUNCATE.
    """

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or allow_cascade:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        return [f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};" for table in tables]

    return sql_flush


@pytest.fixture
def owner(db):
    from tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def other_user(db):
    from tests.factories import UserFactory

    return UserFactory()


def _api_client(user=None):
    # Imported here so that pure tests (pricing, merkle, agent) also run with `-p no:django`.
    from rest_framework.test import APIClient

    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def anon_client():
    return _api_client()


@pytest.fixture
def owner_client(owner):
    return _api_client(owner)


@pytest.fixture
def other_client(other_user):
    return _api_client(other_user)


@pytest.fixture
def embedded(settings):
    """Behave as the embedded default (demo-only features on)."""
    settings.JANCTION_EMBEDDED = True
    return settings


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Start every test with an empty cache (allauth's rate limits and DRF throttles live there)."""
    from django.conf import settings

    if settings.configured:  # pure tests run with `-p no:django` have no Django at all
        from django.core.cache import cache

        cache.clear()
    yield


@pytest.fixture(autouse=True)
def _fresh_channel_layers():
    """Give every test a new channel layer object (the Redis layer's connections stay in the old one).

    channels_redis binds what a consumer's receive() sets up to the event loop it first ran in; a later test's
    consumer on another loop (Channels' test communicator under async_to_sync, a live view in a thread) then never
    got its group messages. In production each server process keeps one loop.
    """
    yield
    from django.conf import settings

    if settings.configured and "channels" in settings.INSTALLED_APPS:
        from channels.layers import channel_layers

        channel_layers.backends = {}


@pytest.fixture
def celery_eager():
    """Run Celery tasks in-process for this test (the embedded default's mode)."""
    from janction.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = previous


@pytest.fixture
def requires_postgresql():
    """Fail, never skip, a test that needs PostgreSQL's row locks when the suite runs on another database."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.fail("This test needs PostgreSQL row locks: set DATABASE_URL=postgres://... (make test does).")
