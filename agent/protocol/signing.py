"""Canonical encoding, signing and verification of usage reports (no Django import).

The gateway imports `verify_usage_report` from here. The signed bytes are the UTF-8 encoding of

    janction.usage.v1\\n<placement_id>\\n<seq>\\n<interval_start_ms>\\n<interval_end_ms>\\n<vgpu_count>\\n<vgpu_milliseconds>\\n

with integers in base 10 (no sign, no leading zeros); the placement id may not contain control
characters. The signature is ECDSA over P-256 with SHA-256, DER-encoded, by the node key whose
CSR was enrolled.
"""

from __future__ import annotations

from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

USAGE_DOMAIN = "janction.usage.v1"


class UsageFields(Protocol):
    """The fields of a usage report (the protobuf message or any object with these attributes)."""

    placement_id: str
    seq: int
    interval_start_ms: int
    interval_end_ms: int
    vgpu_count: int
    vgpu_milliseconds: int


def canonical_usage_bytes(report: UsageFields) -> bytes:
    """Return the bytes a usage report's signature covers."""
    if not report.placement_id or any(ord(char) < 0x20 or char == "\x7f" for char in report.placement_id):
        raise ValueError("placement_id must be non-empty and free of control characters")
    numbers = (
        report.seq,
        report.interval_start_ms,
        report.interval_end_ms,
        report.vgpu_count,
        report.vgpu_milliseconds,
    )
    if any(not isinstance(number, int) or number < 0 for number in numbers):
        raise ValueError("usage report numbers must be non-negative integers")
    fields = [USAGE_DOMAIN, report.placement_id, *(str(number) for number in numbers)]
    return ("\n".join(fields) + "\n").encode()


def usage_is_consistent(report: UsageFields) -> bool:
    """Return whether the report's interval and vGPU-milliseconds agree."""
    duration = report.interval_end_ms - report.interval_start_ms
    return report.seq >= 1 and duration > 0 and report.vgpu_milliseconds == report.vgpu_count * duration


def sign_usage_report(private_key: ec.EllipticCurvePrivateKey, report: UsageFields) -> bytes:
    """Return the DER ECDSA-SHA256 signature of the report's canonical bytes."""
    return private_key.sign(canonical_usage_bytes(report), ec.ECDSA(hashes.SHA256()))


def load_node_public_key(
    key_or_certificate: ec.EllipticCurvePublicKey | x509.Certificate | bytes | str,
) -> ec.EllipticCurvePublicKey:
    """Return the P-256 public key of a node from its certificate or public key (objects or PEM)."""
    key: object = key_or_certificate
    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        key = (
            x509.load_pem_x509_certificate(key)
            if b"-----BEGIN CERTIFICATE-----" in key
            else serialization.load_pem_public_key(key)
        )
    if isinstance(key, x509.Certificate):
        key = key.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("node keys are ECDSA P-256; this key or certificate is not")
    return key


def verify_usage_report(
    key_or_certificate: ec.EllipticCurvePublicKey | x509.Certificate | bytes | str,
    report: UsageFields,
    signature: bytes | None = None,
) -> bool:
    """Return whether the report is consistent and signed by the node's key.

    The signature defaults to `report.signature` (the protobuf field).
    """
    public_key = load_node_public_key(key_or_certificate)
    signature = signature if signature is not None else getattr(report, "signature", b"")
    try:
        if not signature or not usage_is_consistent(report):
            return False
        public_key.verify(signature, canonical_usage_bytes(report), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
