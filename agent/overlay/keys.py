"""The node's WireGuard key pair: made on the host, kept in the state directory (0600), never sent or logged."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

RAW = serialization.Encoding.Raw


def load_or_create(path: Path) -> str:
    """Return the public key (base64) of the key at path, creating the key (mode 0600) when absent."""
    if not path.exists():
        private = X25519PrivateKey.generate()
        raw = private.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(base64.b64encode(raw).decode() + "\n")
    raw = base64.b64decode(path.read_text().strip())
    private = X25519PrivateKey.from_private_bytes(raw)
    return base64.b64encode(private.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)).decode()
