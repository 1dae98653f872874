"""The Idempotency-Key header for money-moving POSTs.

A replay with the same key and body returns the first response; the same key with another body is
refused (422); a duplicate that arrives while the first is still being processed is refused (409).

The record of the response and the request's effect commit in one transaction, so a crash at any point
leaves either both (a retry replays the first response) or neither (a retry runs it afresh). While it
runs, a transaction-scoped advisory lock on (user, key) makes a concurrent duplicate a 409 at once
rather than a wait; SQLite, which runs one writer at a time, needs none.
"""

import hashlib
import json
import os
import re
from datetime import timedelta
from functools import wraps

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from janction.api import exception_handler
from janction.errors import ApplicationError, Conflict, Unprocessable, ValidationFailed
from ledger.models import IdempotencyRecord

HEADER = "Idempotency-Key"
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{8,255}$")
# The header as an OpenAPI parameter, for @extend_schema(parameters=[...]) of every @idempotent view.
IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    HEADER,
    {"type": "string", "pattern": _KEY_PATTERN.pattern},
    OpenApiParameter.HEADER,
    required=True,
    description="A fresh key (e.g. a UUID) per request; retries of the same request reuse it.",
)


def idempotent(view_method):
    """Make a DRF view method exactly-once per (user, Idempotency-Key)."""

    @wraps(view_method)
    def wrapper(self, request, *args, **kwargs):
        key = request.headers.get(HEADER, "")
        if not _KEY_PATTERN.match(key):
            raise ValidationFailed(
                f"Send an {HEADER} header of 8 to 255 characters (letters, digits, '.', '_', ':', '-'), "
                "for example a UUID; retries of the same request must reuse it.",
                code="idempotency_key_required",
            )
        request_hash = _request_hash(request)
        with transaction.atomic():
            replay = _claim(request, key, request_hash)
            if replay is not None:
                return replay
            request.idempotency_key = key
            try:
                with transaction.atomic():  # a refused request leaves no partial effect behind
                    response = view_method(self, request, *args, **kwargs)
            except (ApplicationError, APIException) as exc:
                response = exception_handler(exc, {"view": self, "request": request})
            if response.status_code >= 500:
                transaction.set_rollback(True)  # nothing was promised: let the client retry
                return response
            IdempotencyRecord.objects.create(
                user=request.user,
                key=key,
                method=request.method,
                path=request.path[:500],
                request_hash=request_hash,
                state=IdempotencyRecord.State.COMPLETED,
                response_status=response.status_code,
                response_body=response.data,
                completed_at=timezone.now(),
            )
        if settings.JANCTION_TEST_EXIT_AFTER_IDEMPOTENT_COMMIT:
            os._exit(70)  # tests only: die between the commit and the response, as a crashed worker would
        return response

    return wrapper


def _request_hash(request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _claim(request, key: str, request_hash: str) -> Response | None:
    """Take the (user, key) lock and return None, or the replay of the first response, or raise why not."""
    if connection.vendor == "postgresql":
        digest = hashlib.sha256(f"idempotency:{request.user.pk}:{key}".encode()).digest()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [int.from_bytes(digest[:8], "big", signed=True)])
            locked = cursor.fetchone()[0]
        if not locked:
            raise _in_flight()
    record = IdempotencyRecord.objects.filter(user=request.user, key=key).first()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise Unprocessable(
            f"This {HEADER} was already used with a different request; use a new key for a new request.",
            code="idempotency_key_reused",
        )
    if record.state != IdempotencyRecord.State.COMPLETED:
        raise _in_flight()  # only records written before responses and effects committed together
    response = Response(record.response_body, status=record.response_status)
    response["Idempotent-Replayed"] = "true"
    return response


def _in_flight() -> Conflict:
    return Conflict(
        f"A request with this {HEADER} is still being processed; retry after it finishes.",
        code="idempotency_request_in_flight",
    )


def idempotency_records_purge(*, older_than: timedelta) -> int:
    """Delete completed Idempotency-Key records older than `older_than`; return how many went."""
    cutoff = timezone.now() - older_than
    deleted, _ = IdempotencyRecord.objects.filter(
        state=IdempotencyRecord.State.COMPLETED, completed_at__lt=cutoff
    ).delete()
    return deleted
