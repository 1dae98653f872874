"""The node's identity: an ECDSA P-256 key, its CSR, and TLS credentials for the gateway."""

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    """Return a new P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Return the key as unencrypted PKCS#8 PEM (the file is protected by mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load the node key from a PEM file."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} does not hold an ECDSA key")
    return key


def build_csr_pem(key: ec.EllipticCurvePrivateKey, hostname: str) -> bytes:
    """Return a PEM CSR for the key; the gateway decides the certificate's final subject."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"janction-agent@{hostname}"[:64])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_certificate_pem(data: bytes) -> x509.Certificate:
    """Parse a PEM certificate, raising ValueError with a readable message."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate: {exc}") from exc


def mutual_tls_credentials(*, key_pem: bytes, certificate_pem: bytes, trusted_ca_pem: bytes) -> grpc.ChannelCredentials:
    """Return channel credentials presenting the node certificate and trusting the given CA(s)."""
    return grpc.ssl_channel_credentials(
        root_certificates=trusted_ca_pem, private_key=key_pem, certificate_chain=certificate_pem
    )
