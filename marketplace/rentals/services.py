"""Rental writes: submission with escrow, cancellation, the state machine, settlement and live notifications."""

import logging
import re
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ledger.currencies import AmountAboveCeiling, AmountNotText, read_amount, to_base_units, usdc
from ledger.errors import InsufficientFunds, InvalidAmount
from marketplace.rentals.errors import (
    InvalidRentalTransition,
    RentalAlreadyEnded,
    RentalFundsShort,
    RentalInvalid,
    RentalNotFound,
    RentalPoolUnknown,
)
from marketplace.rentals.holdings import (
    CURRENCY,
    escrow_hold,
    escrow_release,
    hold_amount,
    rental_bid_submit,
)
from marketplace.rentals.metering import placements_settle
from marketplace.rentals.models import Rental, RentalEvent, RentalPlacement, RentalState
from marketplace.svc.validation import expose_validate, service_slug_new
from nodes.models import PLACEMENT_FINAL_STATES, Pool, VGpu
from nodes.services import node_send, overlay_segments_release
from pricing.models import Bid, BidState
from pricing.services import bid_cancel

logger = logging.getLogger(__name__)


ACTIVE_STATES = frozenset({RentalState.ALLOCATED, RentalState.STARTING, RentalState.RUNNING})
TERMINAL_STATES = frozenset(
    {RentalState.COMPLETED, RentalState.FAILED, RentalState.CANCELLED, RentalState.EXPIRED, RentalState.INTERRUPTED}
)
# The rental state machine (docs/rentals.md); interrupted -> pending is the requeue of a rental that asked for restarts.
TRANSITIONS: dict[str, set[str]] = {
    RentalState.PENDING: {RentalState.ALLOCATED, RentalState.CANCELLED, RentalState.EXPIRED},
    RentalState.ALLOCATED: {
        RentalState.STARTING,
        RentalState.RUNNING,
        RentalState.COMPLETED,
        RentalState.FAILED,
        RentalState.CANCELLED,
        RentalState.INTERRUPTED,
    },
    RentalState.STARTING: {
        RentalState.RUNNING,
        RentalState.COMPLETED,
        RentalState.FAILED,
        RentalState.CANCELLED,
        RentalState.INTERRUPTED,
    },
    RentalState.RUNNING: {RentalState.COMPLETED, RentalState.FAILED, RentalState.CANCELLED, RentalState.INTERRUPTED},
    RentalState.INTERRUPTED: {RentalState.PENDING},
    RentalState.COMPLETED: set(),
    RentalState.FAILED: set(),
    RentalState.CANCELLED: set(),
    RentalState.EXPIRED: set(),
}

# -- Validation of what the buyer sends ------------------------------------------------------------------------

# The grammar of github.com/distribution/reference: [domain[:port]/]path[:tag][@digest].
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
# \Z, not $: "$" also matches before a trailing newline, which let "busybox\n" through.
OCI_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
RESERVED_ENV_PREFIXES = ("JANCTION_", "CUDA_MPS_", "NVIDIA_VISIBLE_DEVICES")
SECRET_ENV_PATTERN = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024
MAX_PORTS = 16


def is_secret_env(key: str, secret_keys: Iterable[str] = ()) -> bool:
    """Return whether an environment variable's value is masked in listings."""
    return key in set(secret_keys) or bool(SECRET_ENV_PATTERN.search(key))


def _positive_int(value, what: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RentalInvalid(f"{what} must be a positive whole number.", detail={"field": what})
    if value > maximum:
        raise RentalInvalid(f"{what} may be at most {maximum}.", detail={"field": what})
    return value


def _validate_image(image) -> str:
    if not isinstance(image, str) or len(image) > 255 or not OCI_REFERENCE.match(image):
        raise RentalInvalid(
            f"{image!r} is not a valid OCI image reference; use e.g. docker.io/library/python:3.12 "
            "or registry.example.com/team/app@sha256:<digest>.",
            detail={"field": "image"},
        )
    if len(OCI_REFERENCE.match(image).group("name")) > 255:
        raise RentalInvalid("The image name is longer than 255 characters.", detail={"field": "image"})
    return image


def _validate_command(command) -> list[str]:
    if command is None:
        return []
    if not isinstance(command, list) or not all(isinstance(arg, str) for arg in command):
        raise RentalInvalid(
            'The command must be a list of strings, e.g. ["python", "train.py"].', detail={"field": "command"}
        )
    if len(command) > MAX_COMMAND_ARGS or sum(len(arg.encode()) for arg in command) > MAX_COMMAND_BYTES:
        raise RentalInvalid(
            f"The command may have at most {MAX_COMMAND_ARGS} arguments and {MAX_COMMAND_BYTES} bytes.",
            detail={"field": "command"},
        )
    if any("\x00" in arg for arg in command):
        raise RentalInvalid("Command arguments may not contain NUL characters.", detail={"field": "command"})
    return list(command)


def _validate_env(env, secret_keys) -> tuple[dict[str, str], list[str]]:
    env = {} if env is None else env
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise RentalInvalid("The environment must map names to string values.", detail={"field": "env"})
    for key, value in env.items():
        if not ENV_NAME.match(key):
            raise RentalInvalid(f"{key!r} is not a valid environment variable name.", detail={"field": "env"})
        if key.startswith(RESERVED_ENV_PREFIXES):
            raise RentalInvalid(f"Environment variable {key} is reserved for the platform.", detail={"field": "env"})
        if "\n" in value or "\x00" in value:
            raise RentalInvalid(f"The value of {key} may not contain newlines or NULs.", detail={"field": "env"})
    size = sum(len(key.encode()) + len(value.encode()) + 2 for key, value in env.items())
    limit = settings.RENTALS_ENV_MAX_BYTES
    if size > limit:
        raise RentalInvalid(
            f"The environment is {size} bytes; the limit is {limit} bytes. Pass large data another way.",
            detail={"field": "env", "bytes": size, "limit": limit},
        )
    secret_keys = [] if secret_keys is None else secret_keys
    if not isinstance(secret_keys, list) or not all(isinstance(k, str) and k in env for k in secret_keys):
        raise RentalInvalid("secret_env must list names that appear in env.", detail={"field": "secret_env"})
    return dict(env), sorted(set(secret_keys))


def _validate_ports(ports) -> list[int]:
    ports = [] if ports is None else ports
    if (
        not isinstance(ports, list)
        or len(ports) > MAX_PORTS
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports)
        or len(set(ports)) != len(ports)
    ):
        raise RentalInvalid(
            f"ports must be a list of at most {MAX_PORTS} distinct container ports between 1 and 65535.",
            detail={"field": "ports"},
        )
    return list(ports)


# -- Notifications -------------------------------------------------------------------------------------------


def rental_group(rental_id: int) -> str:
    """Return the channel-layer group of a rental's live view."""
    return f"rental.{rental_id}"


def rental_notify(*, rental_id: int, message: dict) -> None:
    """Send a message to a rental's live view after the current transaction commits."""

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(rental_group(rental_id), message)
        except Exception:  # the live view is best effort; the REST API has everything
            logger.exception("could not notify the live view of rental %s", rental_id)

    transaction.on_commit(send)


# -- State machine -------------------------------------------------------------------------------------------


def rental_transition(*, rental: Rental, to_state: str, reason: str) -> None:
    """Move a locked rental to `to_state` if the state machine allows it; record the event and notify."""
    if to_state not in TRANSITIONS[rental.state]:
        raise InvalidRentalTransition(f"A rental that is {rental.state} cannot become {to_state}.")
    now = timezone.now()
    RentalEvent.objects.create(rental=rental, from_state=rental.state, to_state=to_state, reason=reason[:300])
    rental.state = to_state
    rental.state_reason = reason[:300]
    fields = ["state", "state_reason"]
    if to_state == RentalState.RUNNING:  # the current attempt's start: max duration counts from here
        rental.started_at = now
        fields.append("started_at")
    if to_state in TERMINAL_STATES:
        rental.ended_at = now
        fields.append("ended_at")
    elif to_state == RentalState.PENDING:
        rental.ended_at = None
        fields.append("ended_at")
    rental.save(update_fields=fields)
    rental_notify(
        rental_id=rental.pk,
        message={"type": "rental.state", "state": to_state, "reason": reason[:300], "at": now.isoformat()},
    )


def remaining_ms(rental: Rental) -> int:
    """Return the run time this rental may still use."""
    return max(rental.max_duration_seconds * 1000 - rental.used_ms, 0)


def _lock_rental(*, rental_id: int, owner=None) -> Rental:
    rentals = Rental.objects.select_for_update(of=("self",)).filter(pk=rental_id)
    if owner is not None:
        rentals = rentals.filter(owner=owner)
    rental = rentals.first()
    if rental is None:
        raise RentalNotFound(f"You have no rental with id {rental_id}.")
    return rental


# -- Submission and cancellation ---------------------------------------------------------------------------


def rental_submit(
    *,
    owner,
    pool_name: str,
    vgpus: int,
    max_price_per_hour: str | int,
    max_duration_seconds: int,
    image: str,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    secret_env: list[str] | None = None,
    ports: list[int] | None = None,
    restart_on_interruption: bool = False,
    match_deadline_seconds: int | None = None,
    pausable: bool = False,
    accepts_interruptible: bool = False,
    min_provider_score=None,
    expose: list[dict] | None = None,
    service_public: bool = False,
    internet_egress: bool = False,
) -> Rental:
    """Validate a rental, move its most possible cost into escrow and queue its bid for the next round.

    `max_price_per_hour` is USDC per vGPU-hour as a decimal string (or integer base units when an int).
    Nothing is created when any check or the escrow hold fails.
    """
    pool = Pool.objects.filter(name=pool_name).first() if isinstance(pool_name, str) else None
    if pool is None:
        raise RentalPoolUnknown(
            f"There is no pool named {pool_name!r}; see /api/v1/pools/ for the pools on offer.",
            detail={"field": "pool"},
        )
    ever = VGpu.objects.filter(pool=pool).count()
    vgpus = _positive_int(vgpus, "vgpus", settings.RENTALS_MAX_VGPUS)
    if vgpus > ever:
        raise RentalInvalid(
            f"Pool {pool.name} has {ever} vGPU(s) in all; ask for at most that many.", detail={"field": "vgpus"}
        )
    price = _price(max_price_per_hour)
    duration = _positive_int(max_duration_seconds, "max_duration_seconds", settings.RENTALS_MAX_DURATION_SECONDS)
    image = _validate_image(image)
    command = _validate_command(command)
    env, secret_env = _validate_env(env, secret_env)
    ports = _validate_ports(ports)
    expose = expose_validate(expose)
    if not isinstance(service_public, bool):
        raise RentalInvalid("public is true or false.", detail={"field": "public"})
    if service_public and not expose:
        raise RentalInvalid("Only a rental that exposes ports can be public; add expose.", detail={"field": "public"})
    if not isinstance(restart_on_interruption, bool):
        raise RentalInvalid("restart_on_interruption is true or false.", detail={"field": "restart_on_interruption"})
    flags = {"pausable": pausable, "accepts_interruptible": accepts_interruptible, "internet_egress": internet_egress}
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise RentalInvalid(f"{name} is true or false.", detail={"field": name})
    min_provider_score = _min_provider_score(min_provider_score)
    window = match_deadline_seconds or settings.RENTALS_MATCH_DEADLINE_SECONDS
    _positive_int(window, "match_deadline_seconds", 24 * 3600)
    amount = hold_amount(price_per_hour=price, units=vgpus, duration_ms=duration * 1000)
    with transaction.atomic():
        rental = Rental.objects.create(
            owner=owner,
            pool=pool,
            vgpus=vgpus,
            max_price_per_hour=price,
            max_duration_seconds=duration,
            image=image,
            command=command,
            env=env,
            secret_env_keys=secret_env,
            ports=ports,
            expose=expose,
            service_slug=service_slug_new() if expose else None,
            service_public=service_public,
            restart_on_interruption=restart_on_interruption,
            pausable=pausable,
            accepts_interruptible=accepts_interruptible,
            min_provider_score=min_provider_score,
            internet_egress=internet_egress,
            match_deadline=timezone.now() + timedelta(seconds=window),
            currency=CURRENCY,
        )
        try:
            escrow_hold(rental=rental, amount=amount, attempt=1)
        except InsufficientFunds:
            raise RentalFundsShort(
                f"This rental needs {usdc(amount)} USDC in escrow (max price x vGPUs x duration); "
                "add funds or ask for less.",
                detail={"needed_base_units": str(amount)},
            ) from None
        rental.bid = rental_bid_submit(rental=rental, attempt=1)
        rental.save(update_fields=["held_total", "escrow_held", "bid"])
        RentalEvent.objects.create(rental=rental, from_state="", to_state=RentalState.PENDING, reason="Submitted")
    return rental


def _min_provider_score(value) -> Decimal | None:
    """Read min_provider_score: a number from 0 to 1 (string or JSON number, at most 6 decimals), or none."""
    if value is None or value == "":
        return None
    field = {"field": "min_provider_score"}
    rule = 'Send min_provider_score as a number from 0 to 1 with at most 6 decimals, e.g. "0.6", or leave it out.'
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or len(str(value)) > 40:
        raise RentalInvalid(rule, detail=field)
    try:
        score = Decimal(str(value).strip())
    except ArithmeticError:
        raise RentalInvalid(rule, detail=field) from None
    if not score.is_finite() or not Decimal(0) <= score <= Decimal(1) or score != score.quantize(Decimal("1e-6")):
        raise RentalInvalid(f"min_provider_score is {str(value)[:40]!r}. {rule}", detail=field)
    return score or None  # 0 asks for nothing beyond the pool's minimum


def _price(value) -> int:
    """Read max_price_per_hour: a decimal string of USDC, or an int of base units (this endpoint's rule)."""
    maximum = to_base_units(settings.RENTALS_MAX_PRICE_PER_VGPU_HOUR, CURRENCY)
    field = {"field": "max_price_per_hour"}
    try:
        base = read_amount(value, CURRENCY, allow_zero=True, ceiling=maximum, int_is_base_units=True)
    except AmountNotText:
        raise RentalInvalid(
            'Send max_price_per_hour as a decimal string of USDC per vGPU-hour, e.g. "1.25".', detail=field
        ) from None
    except AmountAboveCeiling:
        raise RentalInvalid(
            f"max_price_per_hour may be at most {settings.RENTALS_MAX_PRICE_PER_VGPU_HOUR} USDC per vGPU-hour.",
            detail=field,
        ) from None
    except InvalidAmount as exc:
        raise RentalInvalid(f"max_price_per_hour: {exc.message}", detail=field) from None
    if base < 1:
        raise RentalInvalid("max_price_per_hour must be greater than zero.", detail=field)
    return base


def rental_cancel(*, owner, rental_id: int) -> Rental:
    """Cancel one of the owner's rentals: withdraw its bid or stop its placements, then refund what is unused."""
    with transaction.atomic():
        rental = _lock_rental(rental_id=rental_id, owner=owner)
        if rental.state in TERMINAL_STATES:
            raise RentalAlreadyEnded(
                f"Rental {rental.pk} is already {rental.state}; there is nothing to cancel.",
                detail={"state": rental.state},
            )
        if rental.state == RentalState.PENDING and rental.bid_id:
            bid_cancel(bid_id=rental.bid_id)
        now_ms = int(timezone.now().timestamp() * 1000)
        placements = list(
            RentalPlacement.objects.select_for_update().filter(rental=rental, settled_at__isnull=True).order_by("pk")
        )
        rental_transition(rental=rental, to_state=RentalState.CANCELLED, reason="Cancelled by its owner")
        placements_stop(rental=rental, placements=placements, bill_until_ms=now_ms)
        rental_settle(rental=rental)
    return rental


def placements_stop(*, rental: Rental, placements: list[RentalPlacement], bill_until_ms: int | None) -> None:
    """Stop locked placements: clip their billing, settle the undispatched ones, and tell the agents after commit.

    The rental's overlay segments are released: the hub stops forwarding for them at its next sync.
    """
    overlay_segments_release(key_prefix=f"rental-{rental.pk}-")
    now = timezone.now()
    to_stop = []
    undispatched = []
    for placement in placements:
        if placement.bill_until_ms is None and bill_until_ms is not None:
            placement.bill_until_ms = bill_until_ms
        placement.ended_at = placement.ended_at or now
        placement.save(update_fields=["bill_until_ms", "ended_at"])
        if placement.dispatched_at is None:
            undispatched.append(placement)
        elif placement.observed_state not in PLACEMENT_FINAL_STATES:
            to_stop.append((placement.node_id, placement.placement_id))
    if undispatched:
        placements_settle(rental=rental, placements=undispatched)
    if to_stop:
        transaction.on_commit(lambda: stops_send(to_stop))


def stops_send(stops: list[tuple[int, str]]) -> None:
    """Send StopPlacement for each (node id, placement id); a node that cannot be reached is skipped."""
    for node_id, placement_id in stops:
        try:
            node_send(node_id=node_id, message={"stop_placement": {"placement_id": placement_id}})
        except Exception as exc:  # an offline node stops everything itself; its placements settle on their own
            logger.info("could not stop placement %s on node %s: %s", placement_id, node_id, exc)


def rental_settle(*, rental: Rental) -> bool:
    """Release what a locked, ended rental still holds once all its placements are settled; return whether done."""
    if rental.state not in TERMINAL_STATES or rental.settled_at is not None:
        return False
    if RentalPlacement.objects.filter(rental=rental, settled_at__isnull=True).exists():
        return False
    escrow_release(
        rental=rental,
        amount=rental.escrow_held,
        key=f"rental:{rental.pk}:settle",
        memo=f"Unused escrow of rental {rental.pk}",
    )
    rental.settled_at = timezone.now()
    rental.save(update_fields=["escrow_held", "refunded", "settled_at"])
    rental_notify(
        rental_id=rental.pk,
        message={
            "type": "rental.settled",
            "charged": str(rental.charged),
            "refunded": str(rental.refunded),
        },
    )
    return True


def rental_expire_unmatched(*, now=None) -> list[int]:
    """End pending rentals whose bid found no match before the deadline and refund them; return their ids."""
    now = now or timezone.now()
    expired = []
    candidates = Rental.objects.filter(
        Q(match_deadline__lte=now) | Q(bid__state__in=[BidState.EXPIRED, BidState.CANCELLED]),
        state=RentalState.PENDING,
    )
    for rental_id in candidates.values_list("pk", flat=True).order_by("pk"):
        with transaction.atomic():
            rental = Rental.objects.select_for_update(skip_locked=True).filter(pk=rental_id).first()
            if rental is None or rental.state != RentalState.PENDING:
                continue
            if rental.bid_id and not bid_cancel(bid_id=rental.bid_id):
                if Bid.objects.filter(pk=rental.bid_id, state=BidState.WON).exists():
                    continue  # a round just allocated it: the allocation takes over
            rental_transition(rental=rental, to_state=RentalState.EXPIRED, reason="No match before the deadline")
            rental_settle(rental=rental)
            expired.append(rental.pk)
    return expired
