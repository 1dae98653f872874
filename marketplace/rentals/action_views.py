"""Buyer actions on one rental beyond the live page: extend it (an escrow top-up) and cancel it after confirming."""

import json
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from janction.errors import ApplicationError
from ledger.currencies import from_base_units
from marketplace.rentals.errors import RentalNotFound
from marketplace.rentals.extend import extension_price_per_hour, rental_extend
from marketplace.rentals.selectors import rental_for_owner
from marketplace.rentals.services import TERMINAL_STATES, rental_cancel
from marketplace.selectors import rental_gpu_telemetry, telemetry_charts

EXTEND_CHOICES_MINUTES = (15, 30, 60, 120, 240)


def _owned(request, rental_id: int):
    try:
        return rental_for_owner(owner=request.user, rental_id=rental_id)
    except RentalNotFound:
        raise Http404("No such rental.") from None


def extend_context(rental) -> dict:
    """What the rental page's extend form shows: the choices and what each more hour holds."""
    return {
        "extend_choices": EXTEND_CHOICES_MINUTES,
        "extend_token": uuid.uuid4(),
        "extend_price": from_base_units(extension_price_per_hour(rental), rental.currency),
    }


@login_required
@require_POST
def rental_extend_page(request, rental_id: int):
    """Extend a rental by the chosen minutes; the form's token makes a resent form a no-op."""
    rental = _owned(request, rental_id)
    minutes = request.POST.get("minutes", "")
    if not minutes.isdigit() or int(minutes) not in EXTEND_CHOICES_MINUTES:
        messages.error(request, f"Choose how long to extend by: {', '.join(map(str, EXTEND_CHOICES_MINUTES))} minutes.")
        return redirect("rental-page", rental_id=rental.pk)
    try:
        result = rental_extend(
            owner=request.user,
            rental_id=rental.pk,
            add_seconds=int(minutes) * 60,
            idempotency_key=request.POST.get("form_token", ""),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        if result.created:
            held = from_base_units(result.amount, rental.currency)
            messages.success(request, f"Extended by {minutes} minutes; {held} USDC more is held in escrow.")
        else:
            messages.info(request, "That extension was already made; nothing more was held.")
    return redirect("rental-page", rental_id=rental.pk)


@login_required
@require_http_methods(["GET", "POST"])
def rental_cancel_confirm_page(request, rental_id: int):
    """Ask before cancelling: say what stops and what comes back; the POST cancels (rental_cancel)."""
    rental = _owned(request, rental_id)
    if request.method == "GET":
        if rental.state in TERMINAL_STATES:
            messages.info(request, f"Rental {rental.pk} has already ended.")
            return redirect("rental-page", rental_id=rental.pk)
        context = {
            "rental": rental,
            "held": from_base_units(rental.escrow_held, rental.currency),
            "charged": from_base_units(rental.charged, rental.currency),
        }
        return render(request, "marketplace/rental_cancel.html", context)
    try:
        rental_cancel(owner=request.user, rental_id=rental.pk)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "The rental is cancelled; what it did not use goes back to your balance.")
    return redirect("rental-page", rental_id=rental.pk)


def gpu_context(rental) -> dict:
    """The rental page's GPU charts: its GPUs' utilisation and memory from heartbeats while it ran."""
    points = rental_gpu_telemetry(rental)
    charts = telemetry_charts(points)
    return {
        "gpu_charts": charts,
        "gpu_util_json": json.dumps(charts["utilization"]),
        "gpu_memory_json": json.dumps(charts["memory"]),
        "gpu_points": len(points),
        "gpu_live": rental.state not in TERMINAL_STATES,
    }


@login_required
def rental_gpu_fragment(request, rental_id: int):
    """The GPU charts alone, for htmx to refresh while the rental runs."""
    rental = _owned(request, rental_id)
    return render(request, "marketplace/_rental_gpu.html", {"rental": rental, **gpu_context(rental)})
