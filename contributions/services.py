"""Writes of data contributions: pairing and revoking devices, signed batch uploads, deleting records.

An upload is checked completely before anything is written (shape, device, signature, counter, consent,
each record's size, dates and leftover private data, the device's epoch cap); then, under the device's row
lock, the counter advances and the new records and their content are stored in one transaction. A record
whose SHA-256 is already stored (by anyone, deleted or not) is reported as a duplicate and stored nowhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contributions import cosigning, minhash, redaction, signing
from contributions.epochs import epoch_bounds
from contributions.errors import (
    BadCosignature,
    BadSignature,
    ConsentOutdated,
    DeviceNotFound,
    DeviceRevoked,
    InvalidKey,
    KeyAlreadyPaired,
    MalformedCosignature,
    MalformedUpload,
    PrivateDataLeft,
    RecordNotFound,
    RecordTooLarge,
    ReplayedCounter,
    UnknownDevice,
    UploadCapReached,
    WalletNotLinked,
)
from contributions.models import Content, Device, MinHashBand, Record
from ledger.models import Wallet

SOURCE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}\Z")
MAX_COUNTER = 2**62
# How far in the future a capture or consent time may lie (clock skew), and how old a capture may be.
CLOCK_SKEW = timedelta(minutes=5)
MAX_CAPTURE_AGE = timedelta(days=30)
RECORD_FIELDS = {"kind", "source", "content", "captured_at", "metadata", "quotes_others"}
UPLOAD_FIELDS = {"device_id", "counter", "consent", "records"}


# --- Devices -------------------------------------------------------------------------------------------


def device_pair(*, user, algorithm: str, public_key: str, name: str) -> Device:
    """Pair the extension key ``public_key`` (base64 raw bytes) with ``user``; pairing the same key again is a no-op."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise InvalidKey("Name the device with 1 to 80 characters.", detail={"field": "name"})
    try:
        raw = signing.b64decode(public_key)
        signing.public_key_check(algorithm=algorithm, public_key=raw)
    except ValueError as error:
        raise InvalidKey(f"The device key is not usable: {error}.", detail={"field": "public_key"}) from None
    with transaction.atomic():
        existing = Device.objects.select_for_update().filter(public_key=raw).first()
        if existing is not None:
            if existing.user_id == user.pk and existing.revoked_at is None:
                return existing
            raise KeyAlreadyPaired(
                "This device key was paired before (and revoked, or by another account);"
                " let the extension make a new key."
            )
        return Device.objects.create(
            user=user, name=name, algorithm=algorithm, public_key=raw, fingerprint=signing.fingerprint(raw)
        )


def device_revoke(*, user, device_id: int) -> Device:
    """Revoke one of ``user``'s devices: its later uploads are refused; what it uploaded stays."""
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(pk=device_id, user=user).first()
        if device is None:
            raise DeviceNotFound("You have no such device.", detail={"device_id": device_id})
        if device.revoked_at is None:
            device.revoked_at = timezone.now()
            device.save(update_fields=["revoked_at"])
        return device


# --- Uploads -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedRecord:
    index: int
    kind: str
    source: str
    content: str
    sha256: str
    captured_at: datetime
    metadata: dict[str, Any]
    quotes_others: bool


@dataclass(frozen=True)
class UploadResult:
    device_id: int
    counter: int
    items: list[dict[str, Any]]


def _when(value: Any, *, field: str, now: datetime) -> datetime:
    moment = parse_datetime(value) if isinstance(value, str) and len(value) <= 40 else None
    if moment is None or moment.tzinfo is None:
        raise MalformedUpload(f"{field} must be an ISO 8601 date-time with a time zone.", detail={"field": field})
    if moment > now + CLOCK_SKEW:
        raise MalformedUpload(f"{field} lies in the future; check the device's clock.", detail={"field": field})
    return moment


def _int(value: Any, *, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedUpload(f"{field} must be a whole number from {low} to {high}.", detail={"field": field})
    return value


def _record(index: int, raw: Any, *, now: datetime) -> CheckedRecord:
    where = f"records[{index}]"
    if not isinstance(raw, dict):
        raise MalformedUpload(f"{where} must be an object.", detail={"index": index})
    unknown = set(raw) - RECORD_FIELDS
    if unknown:
        raise MalformedUpload(f"{where} has unknown fields {sorted(unknown)[:5]}.", detail={"index": index})
    kind = raw.get("kind")
    if kind not in Record.Kind.values:
        raise MalformedUpload(f"{where}.kind must be one of {Record.Kind.values}.", detail={"index": index})
    source = raw.get("source")
    if not isinstance(source, str) or not SOURCE.match(source):
        raise MalformedUpload(
            f"{where}.source must be 1-40 lower-case letters, digits, '.', '_' or '-'.", detail={"index": index}
        )
    content = raw.get("content")
    if not isinstance(content, str) or not content.strip():
        raise MalformedUpload(f"{where}.content must be non-empty text.", detail={"index": index})
    limit = settings.CONTRIBUTIONS_MAX_RECORD_BYTES
    encoded = content.encode("utf-8", errors="surrogatepass")
    if len(encoded) > limit:
        raise RecordTooLarge(
            f"{where}.content is {len(encoded)} bytes; the most is {limit}.",
            detail={"index": index, "max_bytes": limit},
        )
    captured_at = _when(raw.get("captured_at"), field=f"{where}.captured_at", now=now)
    if captured_at < now - MAX_CAPTURE_AGE:
        raise MalformedUpload(f"{where}.captured_at is older than 30 days; drop the record.", detail={"index": index})
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict) or any(
        not isinstance(key, str) or not (value is None or isinstance(value, str | int | float | bool))
        for key, value in metadata.items()
    ):
        raise MalformedUpload(
            f"{where}.metadata must be a flat object of text, numbers or booleans.", detail={"index": index}
        )
    metadata_bytes = len(json.dumps(metadata, ensure_ascii=False).encode())
    if metadata_bytes > settings.CONTRIBUTIONS_MAX_METADATA_BYTES:
        raise RecordTooLarge(
            f"{where}.metadata is {metadata_bytes} bytes; the most is {settings.CONTRIBUTIONS_MAX_METADATA_BYTES}.",
            detail={"index": index},
        )
    quotes_others = raw.get("quotes_others", False)
    if not isinstance(quotes_others, bool):
        raise MalformedUpload(f"{where}.quotes_others must be true or false.", detail={"index": index})
    left = sorted(set(redaction.findings(content)) | set(redaction.findings(json.dumps(metadata, ensure_ascii=False))))
    if left:
        raise PrivateDataLeft(
            f"{where} still holds private data ({', '.join(left)}); redact it in the extension and upload again.",
            detail={"index": index, "found": left},
        )
    return CheckedRecord(
        index=index,
        kind=kind,
        source=source,
        content=content,
        sha256=hashlib.sha256(encoded).hexdigest(),
        captured_at=captured_at,
        metadata=metadata,
        # Social posts quote other people by nature, whatever the extension says.
        quotes_others=quotes_others or kind == Record.Kind.SOCIAL_POST,
    )


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedUpload("The body must be a JSON object.") from None
    if not isinstance(payload, dict):
        raise MalformedUpload("The body must be a JSON object.")
    missing = UPLOAD_FIELDS - set(payload)
    if missing:
        raise MalformedUpload(f"The upload lacks {sorted(missing)}.", detail={"missing": sorted(missing)})
    unknown = set(payload) - UPLOAD_FIELDS
    if unknown:
        raise MalformedUpload(f"The upload has unknown fields {sorted(unknown)[:5]}.")
    return payload


def _cosigner(*, body: bytes, user_id: int, wallet: str | None, signature: str | None) -> str:
    """Return the linked wallet that co-signed ``body`` ('' when not co-signed); raise if the co-signature is bad."""
    if not wallet and not signature:
        return ""
    if not wallet or not signature:
        raise MalformedCosignature(
            "Send both X-Janction-Wallet and X-Janction-Wallet-Signature, or neither.",
            detail={"field": "X-Janction-Wallet" if not wallet else "X-Janction-Wallet-Signature"},
        )
    try:
        claimed = cosigning.cosign_address(wallet)
    except ValueError as error:
        raise MalformedCosignature(f"X-Janction-Wallet: {error}.", detail={"field": "X-Janction-Wallet"}) from None
    try:
        signer = cosigning.cosign_signer(body=body, signature=signature)
    except ValueError as error:
        raise MalformedCosignature(
            f"X-Janction-Wallet-Signature: {error}.", detail={"field": "X-Janction-Wallet-Signature"}
        ) from None
    if signer != claimed:
        raise BadCosignature(
            f"The wallet signature does not verify for {claimed} over this body; sign"
            f" {cosigning.COSIGN_PREFIX!r} + the body's SHA-256 (hex) with personal_sign.",
            detail={"wallet": claimed},
        )
    _linked_wallet_check(user_id=user_id, address=claimed, lock=False)
    return claimed


def _linked_wallet_check(*, user_id: int, address: str, lock: bool) -> None:
    wallets = Wallet.objects.filter(user_id=user_id, address=address)
    if not (wallets.select_for_update() if lock else wallets).exists():
        raise WalletNotLinked(
            f"{address} is not a wallet linked to this device's account; link it on the site first.",
            detail={"wallet": address},
        )


def contribution_batch_upload(
    *, body: bytes, signature: str | None, wallet: str | None = None, wallet_signature: str | None = None
) -> UploadResult:
    """Verify and store one signed batch of records; raise before writing anything if any part is bad.

    ``wallet`` and ``wallet_signature`` are the optional EIP-191 co-signature (contributions.cosigning): when
    given, the signer must be ``wallet`` and ``wallet`` a wallet linked to the device's user; it is stored on
    every record of the batch.
    """
    now = timezone.now()
    payload = _parse(body)
    device_id = _int(payload["device_id"], field="device_id", low=1, high=2**63 - 1)
    counter = _int(payload["counter"], field="counter", low=1, high=MAX_COUNTER)
    device = Device.objects.select_related("user").filter(pk=device_id).first()
    if device is None:
        raise UnknownDevice("No paired device has this id; pair the extension on the site first.")
    if device.revoked_at is not None:
        raise DeviceRevoked("This device was revoked; pair the extension again with a new key.")
    if not device.user.is_active:
        raise DeviceRevoked("This device's account is suspended; contact support.")
    try:
        raw_signature = signing.b64decode(signature or "")
    except ValueError:
        raise BadSignature("Send the device's signature of the body, base64, in X-Janction-Signature.") from None
    if not signing.signature_valid(
        algorithm=device.algorithm, public_key=bytes(device.public_key), signature=raw_signature, body=body
    ):
        raise BadSignature("The signature does not verify under this device's key.")
    cosigner = _cosigner(body=body, user_id=device.user_id, wallet=wallet, signature=wallet_signature)
    consent = payload["consent"]
    if not isinstance(consent, dict) or consent.get("terms_version") != settings.CONTRIBUTIONS_TERMS_VERSION:
        raise ConsentOutdated(
            f"Accept the current contribution terms (version {settings.CONTRIBUTIONS_TERMS_VERSION}) in the extension.",
            detail={"terms_version": settings.CONTRIBUTIONS_TERMS_VERSION},
        )
    consent_at = _when(consent.get("accepted_at"), field="consent.accepted_at", now=now)
    records = payload["records"]
    limit = settings.CONTRIBUTIONS_MAX_BATCH_RECORDS
    if not isinstance(records, list) or not 1 <= len(records) <= limit:
        raise MalformedUpload(f"records must be a list of 1 to {limit} records.", detail={"max_records": limit})
    checked = [_record(index, raw, now=now) for index, raw in enumerate(records)]
    return _store(
        device_id=device.pk,
        counter=counter,
        consent=(consent["terms_version"], consent_at),
        checked=checked,
        cosigner=cosigner,
    )


def _store(
    *, device_id: int, counter: int, consent: tuple[str, datetime], checked: list[CheckedRecord], cosigner: str = ""
) -> UploadResult:
    first: dict[str, CheckedRecord] = {}
    for record in checked:
        first.setdefault(record.sha256, record)
    # Outside the device's lock: the signatures are the costly part (about 20 ms for an 8 KiB record).
    signatures = {sha: minhash.signature(record.content) for sha, record in first.items()}
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=device_id)
        if device.revoked_at is not None:
            raise DeviceRevoked("This device was revoked; pair the extension again with a new key.")
        if counter <= device.last_counter:
            raise ReplayedCounter(
                f"Counter {counter} was used already; the next batch needs a counter above {device.last_counter}.",
                detail={"last_counter": device.last_counter},
            )
        if cosigner:
            # Again under a lock: a wallet unlinked since the check above no longer co-signs.
            _linked_wallet_check(user_id=device.user_id, address=cosigner, lock=True)
        known = set(Record.objects.filter(sha256__in=list(first)).values_list("sha256", flat=True))
        fresh = [record for sha, record in first.items() if sha not in known]
        start, _ = epoch_bounds(moment=timezone.now())
        cap = settings.CONTRIBUTIONS_MAX_UPLOADS_PER_DEVICE_EPOCH
        used = Record.objects.filter(device=device, created_at__gte=start).count()
        if used + len(fresh) > cap:
            raise UploadCapReached(
                f"This device stored {used} records this epoch; the most is {cap}. Upload the rest next epoch.",
                detail={"stored": used, "max": cap},
            )
        terms, consent_at = consent
        Record.objects.bulk_create(
            [
                Record(
                    sha256=record.sha256,
                    user_id=device.user_id,
                    device=device,
                    upload_counter=counter,
                    kind=record.kind,
                    source=record.source,
                    size=len(record.content.encode("utf-8", errors="surrogatepass")),
                    captured_at=record.captured_at,
                    metadata=record.metadata,
                    quotes_others=record.quotes_others,
                    consent_terms_version=terms,
                    consent_at=consent_at,
                    minhash=signatures[record.sha256],
                    cosigner=cosigner,
                )
                for record in fresh
            ],
            ignore_conflicts=True,  # another user's concurrent upload of the same content wins; ours is a duplicate
        )
        ours = dict(
            Record.objects.filter(device=device, upload_counter=counter, sha256__in=list(first)).values_list(
                "sha256", "pk"
            )
        )
        Content.objects.bulk_create(
            [Content(sha256=sha, text=first[sha].content) for sha in ours], ignore_conflicts=True
        )
        MinHashBand.objects.bulk_create(
            [
                MinHashBand(record_id=pk, band=band, value=value)
                for sha, pk in ours.items()
                for band, value in enumerate(minhash.bands(signatures[sha]))
            ]
        )
        device.last_counter = counter
        device.save(update_fields=["last_counter"])
    items = []
    for record in checked:
        stored = ours.get(record.sha256)
        if stored is not None and first[record.sha256] is record:
            items.append({"index": record.index, "sha256": record.sha256, "status": "pending", "id": stored})
        else:
            items.append({"index": record.index, "sha256": record.sha256, "status": "duplicate", "id": None})
    return UploadResult(device_id=device_id, counter=counter, items=items)


# --- Contributor's records -----------------------------------------------------------------------------


def record_delete(*, user, record_id: int) -> Record:
    """Delete one of ``user``'s records: its content, metadata and near-duplicate bands go; its hash stays."""
    with transaction.atomic():
        record = Record.objects.select_for_update().filter(pk=record_id, user=user).first()
        if record is None:
            raise RecordNotFound("You have no such record.", detail={"record_id": record_id})
        if record.status == Record.Status.DELETED:
            return record
        Content.objects.filter(sha256=record.sha256).delete()
        MinHashBand.objects.filter(record=record).delete()
        record.status = Record.Status.DELETED
        record.deleted_at = timezone.now()
        record.metadata = {}
        record.minhash = []
        record.save(update_fields=["status", "deleted_at", "metadata", "minhash"])
        return record
