"""A throwaway certificate authority for the agent's TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.identity import private_key_pem


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class ThrowawayPki:
    """A CA plus a server certificate for localhost; signs node CSRs like the platform CA would."""

    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    server_key_pem: bytes
    server_cert_pem: bytes

    @property
    def ca_pem(self) -> bytes:
        """Return the CA certificate as PEM."""
        return _pem(self.ca_cert)

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )

    def sign_csr(self, csr_pem: bytes, node_id: str) -> bytes:
        """Return a client certificate for the CSR's key with CN = node_id."""
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid
        builder = self._builder(_name(node_id), csr.public_key()).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        return _pem(builder.sign(self.ca_key, hashes.SHA256()))


def make_pki() -> ThrowawayPki:
    """Create a CA and a localhost server certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("janction test CA"))
        .issuer_name(_name("janction test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pki = ThrowawayPki(ca_key, ca_cert, b"", b"")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        pki._builder(_name("localhost"), server_key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki.server_key_pem = private_key_pem(server_key)
    pki.server_cert_pem = _pem(server_cert)
    return pki
