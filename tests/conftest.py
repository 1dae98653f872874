"""Fixtures shared by every test: users, API clients per role; the session's speed settings (docs/testing.md)."""

import pytest

# Test users' passwords are hashed with this many PBKDF2 rounds instead of Django's 1,000,000 (0.7 s per hash on
# a loaded 2-core machine, paid by every UserFactory and log-in). The hashes stay standard pbkdf2_sha256 ones, so
# the servers the tests start in subprocesses (daphne, granian, `make run`) still verify them.
TEST_PBKDF2_ITERATIONS = 1_000


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
    yield


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


@pytest.fixture
def celery_eager():
    """Run Celery tasks in-process for this test (the embedded default's mode)."""
    from janction.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield app
    app.conf.task_always_eager = previous
