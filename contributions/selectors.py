"""Reads of data contributions: a contributor's records and devices, a key's pairing state, operator exports."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.conf import settings
from django.db.models import QuerySet

from contributions import signing
from contributions.models import Content, Device, Record


def records_for_user(*, user) -> QuerySet[Record]:
    return Record.objects.filter(user=user).order_by("-pk")


def devices_for_user(*, user) -> QuerySet[Device]:
    return Device.objects.filter(user=user).order_by("-pk")


def device_status(*, public_key: str) -> dict:
    """Tell an extension whether its key is paired (and its device id), without saying to whom."""
    try:
        raw = signing.b64decode(public_key)
    except ValueError:
        raw = b""
    device = Device.objects.filter(public_key=raw).only("pk", "revoked_at").first() if raw else None
    if device is None:
        return {"paired": False, "revoked": False, "device_id": None}
    return {"paired": device.revoked_at is None, "revoked": device.revoked_at is not None, "device_id": device.pk}


def export_lines(*, kind: str) -> Iterator[str]:
    """Yield one JSON line per accepted, undeleted record of ``kind``, with its SHA-256, oldest first.

    Records that quote other people are left out unless the terms allow them (CONTRIBUTIONS_TERMS_ALLOW_QUOTES).
    """
    records = Record.objects.filter(kind=kind, status=Record.Status.ACCEPTED, deleted_at__isnull=True)
    if not settings.CONTRIBUTIONS_TERMS_ALLOW_QUOTES:
        records = records.filter(quotes_others=False)
    for chunk_start in range(0, records.count(), 1000):
        chunk = list(records.order_by("pk")[chunk_start : chunk_start + 1000])
        texts = dict(Content.objects.filter(sha256__in=[r.sha256 for r in chunk]).values_list("sha256", "text"))
        for record in chunk:
            if record.sha256 not in texts:
                continue  # its content is gone: never exported
            yield json.dumps(
                {
                    "sha256": record.sha256,
                    "kind": record.kind,
                    "source": record.source,
                    "content": texts[record.sha256],
                    "captured_at": record.captured_at.isoformat(),
                    "accepted_at": record.accepted_at.isoformat() if record.accepted_at else None,
                    "consent_terms_version": record.consent_terms_version,
                    "language_script": record.checks.get("script"),
                },
                ensure_ascii=False,
                sort_keys=True,
            )
