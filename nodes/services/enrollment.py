"""Enrollment: one-time tokens, the agent's start command, the CSR exchange and certificate checks."""

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from nodes.ca import certificate_serial_hex, platform_ca
from nodes.errors import EnrollmentRefused
from nodes.models import (
    Node,
    NodeState,
    RevokedCertificate,
)

AGENT_LOG = logging.getLogger("nodes.agent")
ENROLLMENT_TOKEN_PREFIX = "jne"  # noqa: S105 - a public prefix, not a secret


@dataclass(frozen=True)
class EnrollmentTicket:
    node: Node
    token: str  # shown once
    command: str


def hash_enrollment_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


logger = logging.getLogger("nodes.services")

# The embedded demo's node command runs on the demo machine itself: from the checkout, with a declared fake GPU.
DEMO_AGENT_FLAGS = '--fake-gpus "RTX 4090:1" --runtime sandbox'


def _agent_command(node: Node, token: str) -> str:
    """Return the shell command that enrolls and starts the agent, pinning the platform CA by fingerprint."""
    try:
        pin = f" --ca-fingerprint {platform_ca().fingerprint}"
    except ImproperlyConfigured:
        # No CA, no gateway: the agent could not enroll anywhere yet; the command is still the right shape.
        logger.warning("no agent CA is configured, so the node command carries no --ca-fingerprint")
        pin = ""
    python, demo = (".venv/bin/python", f" {DEMO_AGENT_FLAGS}") if settings.JANCTION_EMBEDDED else ("python3", "")
    return (
        f"{python} -m agent --gateway {settings.AGENT_GATEWAY_PUBLIC_ADDRESS}{pin} --enroll-token {token} "
        f"--state-dir ~/.janction-agent/node-{node.pk}{demo}"
    )


def _issue_token(node: Node) -> str:
    token = f"{ENROLLMENT_TOKEN_PREFIX}_{secrets.token_urlsafe(32)}"
    node.enrollment_token_hash = hash_enrollment_token(token)
    node.enrollment_expires_at = timezone.now() + timedelta(seconds=settings.NODE_ENROLLMENT_TOKEN_TTL_SECONDS)
    return token


@dataclass(frozen=True)
class NodeEnrollment:
    node: Node
    certificate_pem: str
    ca_certificate_pem: str


def node_enroll(*, token: str, csr_pem: str, hostname: str = "") -> NodeEnrollment:
    """Exchange a valid, unexpired, unused enrollment token and a CSR for a client certificate."""
    token_hash = hash_enrollment_token(token.strip())
    with transaction.atomic():
        node = (
            Node.objects.select_for_update()
            .filter(enrollment_token_hash=token_hash, deleted_at__isnull=True)
            .order_by("pk")
            .first()
            if token.strip()
            else None
        )
        if node is None:
            raise EnrollmentRefused(
                "Unknown enrollment token; copy it again from the node's page.", code="token_unknown"
            )
        if node.enrolled_at is not None:
            raise EnrollmentRefused(
                "This enrollment token was already used; create a new node to enroll another host.", code="token_used"
            )
        if node.enrollment_expires_at is None or node.enrollment_expires_at <= timezone.now():
            raise EnrollmentRefused(
                "This enrollment token has expired; issue a new token for the node and start the agent with it.",
                code="token_expired",
            )
        if node.state == NodeState.QUARANTINED:
            raise EnrollmentRefused("This node is quarantined and cannot enroll.", code="node_quarantined")
        ca = platform_ca()
        issued = ca.issue_client_certificate(csr_pem=csr_pem, node_id=node.pk)
        node.enrolled_at = timezone.now()
        node.certificate_serial = issued.serial
        node.certificate_pem = issued.pem
        node.hostname = hostname[:255]
        node.save(update_fields=["enrolled_at", "certificate_serial", "certificate_pem", "hostname"])
    AGENT_LOG.info("node %s enrolled (certificate %s, host %s)", node.pk, issued.serial, hostname)
    return NodeEnrollment(node=node, certificate_pem=issued.pem, ca_certificate_pem=ca.certificate_pem)


def node_authenticate(*, certificate_pem: str | bytes) -> Node:
    """Return the live node a verified client certificate belongs to, refusing deleted and quarantined nodes."""
    data = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise EnrollmentRefused("The client certificate cannot be read.", code="certificate_invalid") from None
    serial = certificate_serial_hex(certificate)
    revoked = RevokedCertificate.objects.filter(serial=serial).values_list("reason", flat=True).first()
    if revoked is not None:
        raise EnrollmentRefused(
            f"This certificate was revoked ({revoked.lower()}); it is no longer accepted.", code="node_revoked"
        )
    common_names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    node = Node.objects.filter(certificate_serial=serial).order_by("pk").first()
    if node is None or not common_names or common_names[0].value != str(node.pk):
        raise EnrollmentRefused("No node holds this certificate; enroll the agent again.", code="certificate_unknown")
    if node.deleted_at is not None:
        raise EnrollmentRefused("This node was deleted; its certificate is no longer accepted.", code="node_deleted")
    if node.state == NodeState.QUARANTINED:
        raise EnrollmentRefused("This node is quarantined; contact support.", code="node_quarantined")
    return node
