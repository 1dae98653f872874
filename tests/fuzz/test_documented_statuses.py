"""The other half of the schema's promise: the error statuses every operation documents are really answered."""

import re
import time

import pytest
from rest_framework.test import APIClient

from tests.fuzz.test_schemathesis import OPERATIONS


def _request(client, operation, **extra):
    path = re.sub(r"\{[^}]+\}", "1", operation.path)
    return getattr(client, operation.method.lower())(path, **extra)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_generic_error_statuses_are_answered(db, settings, label):
    operation = OPERATIONS[label]
    documented = set(operation.definition.raw["responses"])
    assert {"400", "401", "413", "429"} <= documented
    client = APIClient()
    assert _request(client, operation, QUERY_STRING="x=%00").status_code == 400
    assert _request(APIClient(HTTP_AUTHORIZATION="Bearer jct_unknown"), operation).status_code == 401
    assert _request(client, operation, CONTENT_LENGTH=str(settings.JANCTION_MAX_BODY_BYTES + 1)).status_code == 413
    settings.JANCTION_RATE_LIMIT_IP = "1/min"
    while True:  # the limit counts per clock minute: two requests either side of a minute's end are both let in
        minute = int(time.time() // 60)
        _request(client, operation)
        throttled = _request(client, operation)
        if int(time.time() // 60) == minute:
            break
    assert throttled.status_code == 429 and throttled["Retry-After"]


@pytest.mark.parametrize(
    "label", sorted(label for label, op in OPERATIONS.items() if "403" in op.definition.raw["responses"])
)
def test_403_is_answered(owner, label):
    operation = OPERATIONS[label]
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(owner)  # a browser session: unsafe methods need the CSRF token, operator views the role
    assert _request(client, operation, HTTP_IDEMPOTENCY_KEY="documented-403").status_code == 403


@pytest.mark.parametrize(
    "label", sorted(label for label, op in OPERATIONS.items() if "415" in op.definition.raw["responses"])
)
def test_415_is_answered(owner_client, label):
    response = _request(
        owner_client, OPERATIONS[label], data="x", content_type="text/plain", HTTP_IDEMPOTENCY_KEY="documented-415"
    )
    assert response.status_code == 415
