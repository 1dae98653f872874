"""Service writes and the checks the ingress asks for: tokens, scoped keys, public flag, who may call, counters."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from marketplace.models import ApiKey
from marketplace.rentals.models import Rental, RentalPlacement, RentalState
from marketplace.services import API_KEY_PREFIX, api_key_authenticate, api_key_create
from marketplace.svc.errors import (
    ServiceGone,
    ServiceNotFound,
    ServiceStarting,
    ServiceTokenNameTaken,
    ServiceTokenNotFound,
    ServiceUnauthorized,
)
from marketplace.svc.models import ServiceStats, ServiceToken
from nodes.services import node_authenticate, overlay_service_addresses

TOKEN_PREFIX = "jst"  # noqa: S105 - the public prefix of service tokens, not a secret
ENDED_STATES = frozenset(
    {RentalState.COMPLETED, RentalState.FAILED, RentalState.CANCELLED, RentalState.EXPIRED, RentalState.INTERRUPTED}
)


def _hash(raw: str) -> str:
    # Tokens carry 256 random bits: a fast hash is enough, there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


def service_of(*, owner, rental_id: int) -> Rental:
    rental = Rental.objects.filter(pk=rental_id, owner=owner).first()
    if rental is None or not rental.expose:
        raise ServiceNotFound(f"You have no rental with id {rental_id} that exposes ports.")
    return rental


# -- Tokens, scoped keys, public ----------------------------------------------------------------------------


def service_token_create(*, owner, rental_id: int, name: str) -> tuple[ServiceToken, str]:
    """Create an access token for one of the owner's services; return it with its plaintext (shown once)."""
    rental = service_of(owner=owner, rental_id=rental_id)
    prefix = secrets.token_hex(6)
    raw = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    try:
        with transaction.atomic():
            token = ServiceToken.objects.create(rental=rental, name=name, prefix=prefix, token_hash=_hash(raw))
    except IntegrityError:
        raise ServiceTokenNameTaken(f"This service already has an active token named {name!r}; pick another.") from None
    return token, raw


def service_token_revoke(*, owner, rental_id: int, token_id: int) -> ServiceToken:
    """Revoke one of a service's tokens; the next request with it gets 401. Revoking twice is harmless."""
    rental = service_of(owner=owner, rental_id=rental_id)
    token = ServiceToken.objects.filter(rental=rental, pk=token_id).first()
    if token is None:
        raise ServiceTokenNotFound(f"Rental {rental_id} has no token with id {token_id}.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def service_key_create(*, owner, rental_id: int, name: str) -> tuple[ApiKey, str]:
    """Create an API key that opens only this service's endpoint (never the account API)."""
    rental = service_of(owner=owner, rental_id=rental_id)
    return api_key_create(user=owner, name=name, service_rental=rental)


def service_public_set(*, owner, rental_id: int, public: bool) -> Rental:
    """Let anyone call the service without a key (public=True), or require a key or token again."""
    rental = service_of(owner=owner, rental_id=rental_id)
    rental.service_public = public
    rental.save(update_fields=["service_public"])
    return rental


# -- What the ingress asks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceTarget:
    """Where an authorised request goes: the rental, its container port and the placements that may serve it."""

    rental_id: int
    port_name: str
    container_port: int
    placement_ids: tuple[str, ...]
    # On a live service segment (docs/overlay.md): the hub's address there and (placement id, address) pairs.
    overlay_source: str = ""
    overlay_addresses: tuple[tuple[str, str], ...] = ()


def _caller_may_open(*, rental: Rental, credential: str) -> None:
    """Raise ServiceUnauthorized (no or bad credential) or ServiceNotFound (someone else's) unless it opens `rental`."""
    if not credential:
        raise ServiceUnauthorized(
            "This service needs 'Authorization: Bearer <key>' with your API key or an access token of the service."
        )
    parts = credential.split("_", 2)
    if len(parts) == 3 and parts[0] == TOKEN_PREFIX:
        token = ServiceToken.objects.filter(prefix=parts[1]).first()
        if (
            token is None
            or token.revoked_at is not None
            or not hmac.compare_digest(token.token_hash, _hash(credential))
        ):
            raise ServiceUnauthorized("This access token is unknown or revoked; ask the service's owner for a new one.")
        if token.rental_id != rental.pk:
            raise ServiceNotFound("There is no such service.")
        return
    if len(parts) == 3 and parts[0] == API_KEY_PREFIX:
        api_key = api_key_authenticate(raw_key=credential)
        if api_key is None or not api_key.user.is_active:
            raise ServiceUnauthorized("This API key is unknown or revoked; create a new one.")
        # Someone else's service, or a key scoped to another service: as if it did not exist.
        if api_key.user_id != rental.owner_id or api_key.service_rental_id not in (None, rental.pk):
            raise ServiceNotFound("There is no such service.")
        return
    raise ServiceUnauthorized("Send an API key (jct_...) or a service access token (jst_...) as the Bearer credential.")


def service_authorize(*, slug: str, port_name: str, credential: str) -> ServiceTarget:
    """Return where a call to /svc/<slug>/<port_name>/ goes, or raise the error the caller gets.

    404 unknown service or port (also someone else's key), 401 no or bad credential, 410 the rental ended,
    503 it has not started yet.
    """
    rental = (
        Rental.objects.filter(service_slug=slug).only("pk", "owner_id", "expose", "state", "service_public").first()
    )
    if rental is None:
        raise ServiceNotFound("There is no such service.")
    if not rental.service_public:
        _caller_may_open(rental=rental, credential=credential)
    port = next((entry["port"] for entry in rental.expose if entry["name"] == port_name), None)
    if port is None:
        names = ", ".join(entry["name"] for entry in rental.expose)
        raise ServiceNotFound(f"This service has no port named {port_name!r}; it exposes: {names}.")
    if rental.state in ENDED_STATES:
        raise ServiceGone(f"This service's rental ended ({rental.state}); it no longer answers.")
    placements = tuple(
        RentalPlacement.objects.filter(rental_id=rental.pk, ended_at__isnull=True, dispatched_at__isnull=False)
        .order_by("pk")
        .values_list("placement_id", flat=True)
    )
    if not placements:
        raise ServiceStarting("This service is starting (its rental is waiting for a node); retry shortly.")
    source, addresses = overlay_service_addresses(placement_ids=placements)
    return ServiceTarget(
        rental_id=rental.pk,
        port_name=port_name,
        container_port=port,
        placement_ids=placements,
        overlay_source=source,
        overlay_addresses=tuple((pid, addresses[pid]) for pid in placements if pid in addresses),
    )


def tunnel_authorize(*, certificate_pem: bytes, placement_id: str, container_port: int) -> int:
    """Return the rental id a tunnel offered by an agent serves, or raise: its node must run the placement.

    The node comes from the verified client certificate; the placement must be one of that node's, live, and
    the port one its rental exposes.
    """
    node = node_authenticate(certificate_pem=certificate_pem)
    placement = (
        RentalPlacement.objects.filter(placement_id=placement_id, node_id=node.pk, ended_at__isnull=True)
        .select_related("rental")
        .only("rental__expose", "rental__state", "rental_id")
        .first()
    )
    if placement is None:
        raise ServiceNotFound(f"Node {node.pk} runs no live placement {placement_id!r}.")
    if placement.rental.state in ENDED_STATES:
        raise ServiceGone(f"The rental of placement {placement_id} ended.")
    if container_port not in {entry["port"] for entry in placement.rental.expose}:
        raise ServiceNotFound(f"Placement {placement_id} does not expose port {container_port}.")
    return placement.rental_id


def service_stats_add(*, rows: list[dict]) -> None:
    """Add counters to each (rental_id, port_name) row: requests, errors, bytes_*, latency_ms_*, overlay_requests."""
    for row in sorted(rows, key=lambda r: (r["rental_id"], r["port_name"])):
        stats, _ = ServiceStats.objects.get_or_create(rental_id=row["rental_id"], port_name=row["port_name"])
        ServiceStats.objects.filter(pk=stats.pk).update(
            requests=F("requests") + row["requests"],
            errors=F("errors") + row["errors"],
            bytes_in=F("bytes_in") + row["bytes_in"],
            bytes_out=F("bytes_out") + row["bytes_out"],
            latency_ms_total=F("latency_ms_total") + row["latency_ms_total"],
            latency_ms_max=Greatest(F("latency_ms_max"), row["latency_ms_max"]),
            overlay_requests=F("overlay_requests") + row.get("overlay_requests", 0),
            updated_at=timezone.now(),
        )
