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

from ledger.services import ledger_deposit
from marketplace.rentals.services import rental_submit
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
    return api_key_create(user=owner, name="fuzzer")[1]


@pytest.fixture
def real_ids(owner, api_key):
    """Objects of the fuzzing user, so that some requests reach them rather than a 404."""
    node = online_node(owner, name="rig", vgpus=2, price=500_000)
    ledger_deposit(user_id=owner.pk, currency="USDC", amount=1_000_000_000, idempotency_key="fuzz-funds")
    rental = rental_submit(
        owner=owner,
        pool_name="ada-12g",
        vgpus=1,
        max_price_per_hour="2",
        max_duration_seconds=600,
        image="docker.io/library/busybox:1.36",
    )
    spare_key, _ = api_key_create(user=owner, name="spare")
    return {"node_id": node.pk, "rental_id": rental.pk, "key_id": spare_key.pk}


def _fuzz(operation, headers, real_ids=None):
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    own = {name: value for name, value in (real_ids or {}).items() if "{" + name + "}" in operation.path}

    @given(case=strategy, use_own=st.booleans())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case, use_own):
        if own and use_own:
            case.path_parameters = {**(case.path_parameters or {}), **own}
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)

    run()


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_with_an_api_key(db, api_key, real_ids, label):
    _fuzz(OPERATIONS[label], {"Authorization": f"Bearer {api_key}"}, real_ids)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_without_credentials(db, label):
    _fuzz(OPERATIONS[label], {})
