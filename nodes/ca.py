"""The platform CA: signs node client certificates (from CSRs) and the gateway's server certificate.

The CA comes from settings: `AGENT_CA_CERT_PEM`/`AGENT_CA_KEY_PEM` (PEM text, usually from the
environment), else `AGENT_CA_CERT_FILE`/`AGENT_CA_KEY_FILE`. In the embedded default with none of
them set, a CA is generated on first use under `VAR_DIR/ca` (key mode 0600) and reused afterwards.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from janction.errors import ValidationFailed

CA_COMMON_NAME = "Janction agent CA"
CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=30)
# Certificates start a little in the past so that clocks a few minutes apart accept them.
CLOCK_SKEW = datetime.timedelta(minutes=5)


class CertificateRequestInvalid(ValidationFailed):
    code = "certificate_request_invalid"


@dataclass(frozen=True)
class IssuedCertificate:
    pem: str
    serial: str  # lower-case hex, as stored in Node.certificate_serial
    not_after: datetime.datetime


def certificate_serial_hex(certificate: x509.Certificate) -> str:
    """Return a certificate's serial in the form Node.certificate_serial stores."""
    return format(certificate.serial_number, "x")


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class PlatformCa:
    """A CA certificate and its key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> str:
        """Return the CA certificate as PEM."""
        return _pem(self.certificate)

    @property
    def fingerprint(self) -> str:
        """Return the CA certificate's SHA-256 as agents pin it: sha256:<lower-case hex>."""
        return "sha256:" + self.certificate.fingerprint(hashes.SHA256()).hex()

    def _builder(self, subject: x509.Name, public_key, validity: datetime.timedelta) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + validity, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )

    def issue_client_certificate(self, *, csr_pem: str | bytes, node_id: int) -> IssuedCertificate:
        """Sign a node's CSR: subject CN = node id, client-auth only; the CSR's own subject is ignored."""
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
            signature_valid = csr.is_signature_valid
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CertificateRequestInvalid(f"The CSR is not a PEM certificate signing request: {exc}") from None
        if not signature_valid:
            raise CertificateRequestInvalid("The CSR's signature does not verify; send a CSR signed by its own key.")
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
            raise CertificateRequestInvalid("Node keys must be ECDSA P-256; this CSR holds another kind of key.")
        validity = datetime.timedelta(days=settings.AGENT_CLIENT_CERT_DAYS)
        certificate = (
            self._builder(_name(str(node_id)), public_key, validity)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return IssuedCertificate(
            pem=_pem(certificate),
            serial=certificate_serial_hex(certificate),
            not_after=certificate.not_valid_after_utc,
        )

    def issue_server_certificate(self, *, names: list[str]) -> tuple[bytes, bytes]:
        """Return (key PEM, certificate PEM) of a fresh server identity for the given host names and IPs."""
        key = ec.generate_private_key(ec.SECP256R1())
        alternative_names: list[x509.GeneralName] = []
        for name in dict.fromkeys(names):
            try:
                alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternative_names.append(x509.DNSName(name))
        certificate = (
            self._builder(_name(names[0]), key.public_key(), SERVER_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return key_pem, _pem(certificate).encode()


def ca_generate() -> PlatformCa:
    """Create a new self-signed P-256 CA (ten years)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(CA_COMMON_NAME))
        .issuer_name(_name(CA_COMMON_NAME))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return PlatformCa(certificate=certificate, key=key)


def ca_key_pem(ca: PlatformCa) -> bytes:
    """Return the CA key as unencrypted PKCS#8 PEM."""
    return ca.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load(certificate_pem: bytes, key_pem: bytes, source: str) -> PlatformCa:
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise ImproperlyConfigured(f"The agent CA from {source} cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != certificate.public_key():
        raise ImproperlyConfigured(f"The agent CA key from {source} is not the EC key of its certificate.")
    return PlatformCa(certificate=certificate, key=key)


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


@functools.lru_cache(maxsize=8)
def _ca_from(cert_pem: str, key_pem: str, cert_file: str, key_file: str, embedded: bool, var_dir: str) -> PlatformCa:
    if cert_pem or key_pem:
        if not (cert_pem and key_pem):
            raise ImproperlyConfigured("Set both AGENT_CA_CERT_PEM and AGENT_CA_KEY_PEM, or neither.")
        return _load(cert_pem.encode(), key_pem.encode(), "AGENT_CA_CERT_PEM/AGENT_CA_KEY_PEM")
    if cert_file or key_file:
        if not (cert_file and key_file):
            raise ImproperlyConfigured("Set both AGENT_CA_CERT_FILE and AGENT_CA_KEY_FILE, or neither.")
        return _load(Path(cert_file).read_bytes(), Path(key_file).read_bytes(), f"{cert_file} and {key_file}")
    if not embedded:
        raise ImproperlyConfigured(
            "No agent CA is configured: set AGENT_CA_CERT_PEM and AGENT_CA_KEY_PEM (or the *_FILE variants); "
            "docs/gateway.md shows how to create one."
        )
    directory = Path(var_dir) / "ca"
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if not key_path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = ca_generate()
        _write_private(key_path, ca_key_pem(ca))
        cert_path.write_text(ca.certificate_pem)
        return ca
    return _load(cert_path.read_bytes(), key_path.read_bytes(), str(directory))


def platform_ca() -> PlatformCa:
    """Return the platform CA configured in settings (generating it in the embedded default)."""
    return _ca_from(
        settings.AGENT_CA_CERT_PEM,
        settings.AGENT_CA_KEY_PEM,
        str(settings.AGENT_CA_CERT_FILE or ""),
        str(settings.AGENT_CA_KEY_FILE or ""),
        bool(settings.JANCTION_EMBEDDED),
        str(settings.VAR_DIR),
    )
