"""Device signatures: Ed25519 (WebCrypto's raw 32-byte keys) or ECDSA P-256 (raw 65-byte keys, r||s signatures).

A batch is signed over SIGNING_PREFIX + the exact request body bytes, so nothing is canonicalised and a
signature for one body never verifies for another. Pure: no Django import.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

SIGNING_PREFIX = b"janction-contribution-v1\n"
ED25519 = "Ed25519"
P256 = "ECDSA-P256"
KEY_LENGTHS = {ED25519: 32, P256: 65}


def b64decode(value: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not; raise ValueError on anything else."""
    if not isinstance(value, str) or len(value) > 200:
        raise ValueError("not a short base64 string")
    cleaned = value.replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base64") from error


def public_key_check(*, algorithm: str, public_key: bytes) -> None:
    """Raise ValueError unless ``public_key`` is a valid raw key of ``algorithm``."""
    if algorithm not in KEY_LENGTHS:
        raise ValueError(f"algorithm must be one of {sorted(KEY_LENGTHS)}")
    if len(public_key) != KEY_LENGTHS[algorithm]:
        raise ValueError(f"an {algorithm} public key is {KEY_LENGTHS[algorithm]} raw bytes")
    if algorithm == ED25519:
        Ed25519PublicKey.from_public_bytes(public_key)
    else:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)


def fingerprint(public_key: bytes) -> str:
    """Return a short, human-comparable fingerprint of a key: the first 8 bytes of its SHA-256 as 4 groups."""
    digest = hashlib.sha256(public_key).hexdigest()[:16].upper()
    return "-".join(digest[i : i + 4] for i in range(0, 16, 4))


def signature_valid(*, algorithm: str, public_key: bytes, signature: bytes, body: bytes) -> bool:
    """Return whether ``signature`` signs SIGNING_PREFIX + ``body`` under the raw ``public_key``."""
    message = SIGNING_PREFIX + body
    try:
        if algorithm == ED25519:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
            return True
        if algorithm == P256 and len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
            key.verify(der, message, ec.ECDSA(hashes.SHA256()))
            return True
    except (InvalidSignature, ValueError):
        return False
    return False
