"""The Idempotency-Key header for money-moving POSTs.

A replay with the same key and body returns the first response; the same key with another body is
refused (422); a duplicate that arrives while the first is still being processed is refused (409).
"""

import hashlib
import json
import re
from datetime import timedelta
from functools import wraps

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from janction.api import exception_handler
from janction.errors import ApplicationError, Conflict, Unprocessable, ValidationFailed
from ledger.models import IdempotencyRecord

HEADER = "Idempotency-Key"
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{8,255}$")
# A record left in flight this long belongs to a request that died; a retry may take it over.
STALE_AFTER = timedelta(minutes=5)


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
        record, replay = _claim(request, key, request_hash)
        if replay is not None:
            return replay
        request.idempotency_key = key
        try:
            response = view_method(self, request, *args, **kwargs)
        except (ApplicationError, APIException) as exc:
            response = exception_handler(exc, {"view": self, "request": request})
        except Exception:
            record.delete()  # nothing was promised: let the client retry
            raise
        if response.status_code >= 500:
            record.delete()
            return response
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            state=IdempotencyRecord.State.COMPLETED,
            response_status=response.status_code,
            response_body=response.data,
            completed_at=timezone.now(),
        )
        return response

    return wrapper


def _request_hash(request) -> str:
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _claim(request, key: str, request_hash: str) -> tuple[IdempotencyRecord | None, Response | None]:
    """Insert the in-flight record, or explain why this request is a replay, a conflict or a misuse."""
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                user=request.user, key=key, method=request.method, path=request.path[:500], request_hash=request_hash
            )
        return record, None
    except IntegrityError:
        record = IdempotencyRecord.objects.get(user=request.user, key=key)
    if record.request_hash != request_hash:
        raise Unprocessable(
            f"This {HEADER} was already used with a different request; use a new key for a new request.",
            code="idempotency_key_reused",
        )
    if record.state == IdempotencyRecord.State.COMPLETED:
        response = Response(record.response_body, status=record.response_status)
        response["Idempotent-Replayed"] = "true"
        return None, response
    stale_before = timezone.now() - STALE_AFTER
    taken_over = IdempotencyRecord.objects.filter(
        pk=record.pk, state=IdempotencyRecord.State.IN_FLIGHT, created_at__lt=stale_before
    ).update(created_at=timezone.now())
    if taken_over:
        return record, None
    raise Conflict(
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
