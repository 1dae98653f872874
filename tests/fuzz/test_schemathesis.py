"""Schemathesis over every operation of the OpenAPI schema, with an API key and without.

Each operation gets a bounded number of generated requests (valid and invalid ones). A request fails the
test when the answer is a 5xx, a status the operation's schema does not list, or a body or content type
that does not match the schema. The application runs in-process (WSGI) on the test database.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from marketplace.services import api_key_create
from tests.factories import online_node

# Generated requests per operation and mode (valid + invalid data); ~40 operations x 2 modes in all.
EXAMPLES = 10
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]

APP = get_wsgi_application()
SCHEMA = schemathesis.openapi.from_wsgi("/api/schema/?format=json", APP)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


def test_every_operation_is_fuzzed():
    assert len(OPERATIONS) >= 39
    for operation in OPERATIONS.values():
        documented = set(operation.definition.raw["responses"])
        assert "500" not in documented and "default" not in documented, operation.label


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """Keep the test's database connection open across requests, as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_key(owner, embedded):
    online_node(owner, name="rig", vgpus=2, price=500_000)
    return api_key_create(user=owner, name="fuzzer")[1]


def _fuzz(operation, headers):
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_with_an_api_key(db, api_key, label):
    _fuzz(OPERATIONS[label], {"Authorization": f"Bearer {api_key}"})


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_without_credentials(db, label):
    _fuzz(OPERATIONS[label], {})
