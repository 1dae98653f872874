import pytest

from tests.factories import UserFactory, online_node


@pytest.fixture
def provider(db):
    return UserFactory()


@pytest.fixture
def buyer(db):
    return UserFactory()


@pytest.fixture
def node(provider):
    return online_node(provider, name="rig")
