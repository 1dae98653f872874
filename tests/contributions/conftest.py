"""Fixtures for data contributions: a contributor with a paired Ed25519 device and a way to sign uploads."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from rest_framework.test import APIClient

from contributions.services import device_pair
from contributions.signing import SIGNING_PREFIX
from tests.factories import UserFactory

UPLOAD_URL = "/api/v1/contributions/"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def record(content: str, *, kind: str = "search_query", source: str = "duckduckgo", **extra) -> dict:
    return {"kind": kind, "source": source, "content": content, "captured_at": now_iso(), **extra}


@dataclass
class Extension:
    """A paired extension: its key, its device row, and the next upload counter."""

    user: object
    key: Ed25519PrivateKey
    device: object
    counters: itertools.count = field(default_factory=lambda: itertools.count(1))

    def body(self, records: list[dict], *, counter: int | None = None, **overrides) -> bytes:
        payload = {
            "device_id": self.device.pk,
            "counter": next(self.counters) if counter is None else counter,
            "consent": {"terms_version": settings.CONTRIBUTIONS_TERMS_VERSION, "accepted_at": now_iso()},
            "records": records,
            **overrides,
        }
        return json.dumps(payload).encode()

    def sign(self, body: bytes, key: Ed25519PrivateKey | None = None) -> str:
        return base64.b64encode((key or self.key).sign(SIGNING_PREFIX + body)).decode()

    def post(self, body: bytes, *, signature: str | None = None):
        headers = {"HTTP_X_JANCTION_SIGNATURE": self.sign(body) if signature is None else signature}
        return APIClient().post(UPLOAD_URL, data=body, content_type="application/json", **headers)

    def upload(self, records: list[dict], **overrides):
        return self.post(self.body(records, **overrides))


def pair(user) -> Extension:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    device = device_pair(user=user, algorithm="Ed25519", public_key=base64.b64encode(raw).decode(), name="Chromium")
    return Extension(user=user, key=key, device=device)


@pytest.fixture
def ext(db) -> Extension:
    return pair(UserFactory())


@pytest.fixture
def other_ext(db) -> Extension:
    return pair(UserFactory())
