"""Fixtures shared by every test: users, API clients per role."""

import pytest


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
