"""Rental reads: the owner's rentals, one rental, its events and its capped log lines."""

from django.conf import settings
from django.db.models import QuerySet

from marketplace.rentals.errors import RentalNotFound
from marketplace.rentals.models import Rental, RentalPlacement
from marketplace.rentals.services import is_secret_env
from nodes.models import PlacementLogLine

MASK = "********"


def rentals_for_owner(*, owner) -> QuerySet[Rental]:
    """Return the owner's rentals, newest first."""
    return Rental.objects.filter(owner=owner).select_related("pool").order_by("-created_at", "-pk")


def rental_for_owner(*, owner, rental_id: int) -> Rental:
    """Return one of the owner's rentals, or raise RentalNotFound (also for other users' rentals)."""
    rental = rentals_for_owner(owner=owner).filter(pk=rental_id).prefetch_related("events", "placements").first()
    if rental is None:
        raise RentalNotFound(f"You have no rental with id {rental_id}.")
    return rental


def rental_env_masked(rental: Rental) -> dict[str, str]:
    """Return a rental's environment with secret values masked."""
    return {key: MASK if is_secret_env(key, rental.secret_env_keys) else value for key, value in rental.env.items()}


def rental_log_lines(*, rental: Rental, after: int = 0) -> QuerySet[PlacementLogLine]:
    """Return a rental's log lines across its placements in order, the first RENTALS_LOG_LINES_MAX of them.

    `after` skips that many lines (a cursor for clients that poll).
    """
    cap = settings.RENTALS_LOG_LINES_MAX
    return (
        PlacementLogLine.objects.filter(placement__rental_placement__rental=rental)
        .select_related("placement")
        .order_by("placement__created_at", "placement_id", "seq")[max(after, 0) : cap]
    )


def rental_log_total(*, rental: Rental) -> int:
    """Return how many log lines a rental's placements produced (they may exceed the cap)."""
    return PlacementLogLine.objects.filter(placement__rental_placement__rental=rental).count()


def placement_buyers(*, placement_ids: set[str]) -> dict[str, int]:
    """Return the renting user of each of these placement ids that belongs to a rental."""
    rows = RentalPlacement.objects.filter(placement_id__in=placement_ids)
    return dict(rows.values_list("placement_id", "rental__owner_id"))
