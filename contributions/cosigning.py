"""Optional EIP-191 co-signatures of an upload by a wallet its uploader linked (issue 20).

The wallet signs, with ``personal_sign``, the text COSIGN_PREFIX + the SHA-256 (hex) of the exact body bytes
the device signed. The body carries the device id and its counter, so a co-signature binds one batch of one
device and cannot be moved onto another batch. Pure: no Django import; whether the signer is linked to the
uploader is the service's check (contributions.services).
"""

from __future__ import annotations

import hashlib
import re

from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from eth_utils import is_address, to_checksum_address

COSIGN_PREFIX = "janction-contribution-cosign-v1\n"
_SIGNATURE = re.compile(r"(0x)?[0-9a-fA-F]{130}\Z")


def cosign_message(body: bytes) -> str:
    """The text the wallet signs (EIP-191 version 0x45, personal_sign) for this exact body."""
    return COSIGN_PREFIX + hashlib.sha256(body).hexdigest()


def cosign_address(value: str) -> str:
    """Return the EIP-55 form of ``value``; raise ValueError unless it is an address (0x + 40 hex digits)."""
    if not isinstance(value, str) or len(value) != 42 or not is_address(value):
        raise ValueError("the wallet must be an address: 0x followed by 40 hex digits")
    return to_checksum_address(value)


def cosign_signer(*, body: bytes, signature: str) -> str:
    """Recover the EIP-55 address that signed ``cosign_message(body)``; raise ValueError if malformed."""
    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        raise ValueError("the wallet signature must be 65 bytes as hex (0x followed by 130 hex digits)")
    try:
        return EthAccount.recover_message(encode_defunct(text=cosign_message(body)), signature=signature)
    except Exception:  # eth_account raises several unrelated types (bad v, s out of range) for bad signatures
        raise ValueError("the wallet signature does not recover to any address") from None
