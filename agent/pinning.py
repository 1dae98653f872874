"""Trust the gateway's CA by its SHA-256 fingerprint (pinning): take the pinned CA from the chain the gateway shows.

The enrollment command carries `--ca-fingerprint sha256:<64 hex>`. Before enrolling, the agent opens one TLS
connection without verification only to read the certificates the gateway presents, keeps the one whose
SHA-256 equals the pin (it must be a CA), and from then on verifies the gateway against that CA alone. A
gateway that cannot show the pinned CA is refused; nothing it sends is trusted on first use.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization

FINGERPRINT_PREFIX = "sha256:"
_HEX = re.compile(r"^[0-9a-f]{64}$")
CONNECT_TIMEOUT_SECONDS = 10


class PinError(RuntimeError):
    """The gateway's CA could not be obtained or does not match the pin; the message says what to do."""


def parse_fingerprint(text: str) -> bytes:
    """Return the 32 bytes of `sha256:<hex>` (colons and case are ignored); raise ValueError otherwise."""
    value = text.strip().lower()
    if value.startswith(FINGERPRINT_PREFIX):
        value = value[len(FINGERPRINT_PREFIX) :]
    value = value.replace(":", "")
    if not _HEX.match(value):
        raise ValueError(f"expected sha256: followed by 64 hex digits, got {text!r}")
    return bytes.fromhex(value)


def format_fingerprint(digest: bytes) -> str:
    """Return a digest in the form the commands show: sha256:<lower-case hex>."""
    return FINGERPRINT_PREFIX + digest.hex()


def certificate_fingerprint(der: bytes) -> bytes:
    """Return the SHA-256 of a certificate's DER encoding."""
    return hashlib.sha256(der).digest()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _presented_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """Return the DER certificates the peer sent, leaf first (public API from Python 3.13, private before)."""
    public = getattr(tls, "get_unverified_chain", None)
    chain = public() if public is not None else tls._sslobj.get_unverified_chain()  # type: ignore[union-attr]
    return [item if isinstance(item, bytes) else item.public_bytes(ssl._ssl.ENCODING_DER) for item in chain or []]


def presented_certificates(address: str, *, timeout: float = CONNECT_TIMEOUT_SECONDS) -> list[bytes]:
    """Return the certificates the TLS server at HOST:PORT presents, without trusting any of them."""
    host, port = _split(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only to read the chain; the pin decides what is trusted
    context.set_alpn_protocols(["h2"])  # gRPC servers refuse TLS clients that do not offer HTTP/2
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            return _presented_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise PinError(
            f"cannot reach the gateway at {address} over TLS ({exc}): check the --gateway address and that the "
            "gateway is running and reachable from this host."
        ) from exc


def pinned_ca_pem(address: str, pin: bytes, *, timeout: float = CONNECT_TIMEOUT_SECONDS) -> bytes:
    """Return the PEM of the CA certificate with the pinned fingerprint among those the gateway presents."""
    presented = presented_certificates(address, timeout=timeout)
    for der in presented:
        if certificate_fingerprint(der) != pin:
            continue
        certificate = x509.load_der_x509_certificate(der)
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise PinError(
                f"the pinned certificate {format_fingerprint(pin)} is not a CA: copy the agent command again "
                "from the provider page; its --ca-fingerprint names the platform CA."
            )
        return certificate.public_bytes(serialization.Encoding.PEM)
    seen = ", ".join(format_fingerprint(certificate_fingerprint(der)) for der in presented) or "none"
    raise PinError(
        f"the gateway at {address} does not present the CA {format_fingerprint(pin)} this command pins (it shows "
        f"{seen}): copy the command again from the provider page, and if it still fails do not enroll, because "
        "something between you and the gateway may be intercepting the connection."
    )
