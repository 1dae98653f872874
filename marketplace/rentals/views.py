"""Buyer pages: the rentals list with the rent form, one rental with its live view, and cancel."""

import shlex
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from janction.errors import ApplicationError
from ledger.currencies import usdc
from marketplace.rentals.action_views import extend_context, gpu_context
from marketplace.rentals.errors import RentalInvalid, RentalNotFound
from marketplace.rentals.models import RentalState
from marketplace.rentals.selectors import (
    rental_env_masked,
    rental_for_owner,
    rental_log_lines,
    rental_pause_log,
    rentals_for_owner,
)
from marketplace.rentals.services import TERMINAL_STATES, rental_submit
from marketplace.svc.selectors import service_stats, service_urls
from nodes.selectors import pools_with_supply

# A submitted form token is remembered this long: a resubmission inside it shows the first rental.
FORM_TOKEN_SECONDS = 24 * 3600
_IN_FLIGHT = "in-flight"

# Service field names (RentalInvalid.detail["field"]) -> the form field the error is shown next to.
_FORM_FIELDS = {"max_price_per_hour": "max_price", "max_duration_seconds": "max_duration_minutes", "secret_env": "env"}


def _money(rental) -> dict:
    return {
        "max_price": usdc(rental.max_price_per_hour),
        "held_total": usdc(rental.held_total),
        "held": usdc(rental.escrow_held),
        "charged": usdc(rental.charged),
        "refunded": usdc(rental.refunded),
    }


def _whole_number(text: str):
    """Return `text` as an int when it is one, else unchanged so that the service refuses it with its message."""
    try:
        return int(text.strip())
    except ValueError:
        return text


def _parse_form(post) -> dict:
    """Turn the form's text fields into rental_submit's arguments; raise RentalInvalid for text that cannot parse.

    Only the form's own syntax is checked here (quotes, KEY=VALUE lines); every rule is the service's.
    """
    try:
        command = shlex.split(post.get("command", ""))
    except ValueError as exc:
        raise RentalInvalid(
            f"The command cannot be split into arguments ({exc}): close every quote or escape it with a backslash.",
            detail={"field": "command"},
        ) from None
    env = {}
    for number, line in enumerate(post.get("env", "").splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise RentalInvalid(f"Environment line {number} is not KEY=VALUE.", detail={"field": "env"})
        env[key.strip()] = value
    minutes = _whole_number(post.get("max_duration_minutes", ""))
    return {
        "pool_name": post.get("pool", ""),
        "vgpus": _whole_number(post.get("vgpus", "")),
        "max_price_per_hour": post.get("max_price", "").strip(),
        "max_duration_seconds": minutes * 60 if isinstance(minutes, int) else minutes,
        "image": post.get("image", "").strip(),
        "command": command,
        "env": env,
        "secret_env": post.get("secret_env", "").replace(",", " ").split(),
        "restart_on_interruption": post.get("restart_on_interruption") == "on",
        "pausable": post.get("pausable") == "on",
        "accepts_interruptible": post.get("accepts_interruptible") == "on",
        "min_provider_score": post.get("min_provider_score", "").strip() or None,
        "expose": _parse_expose(post.get("expose", "")),
        "service_public": post.get("public") == "on",
    }


def _parse_expose(text: str) -> list[dict]:
    """Read "name=port" lines (or words) into expose entries; the service checks names and ports."""
    expose = []
    for number, item in enumerate(text.replace(",", " ").split(), start=1):
        name, sep, port = item.partition("=")
        if not sep:
            raise RentalInvalid(
                f"Exposed port {number} ({item[:40]!r}) is not NAME=PORT, e.g. web=8000.", detail={"field": "expose"}
            )
        expose.append({"name": name.strip(), "port": _whole_number(port)})
    return expose


def _submit_once(request):
    """Submit the rent form at most once per form token; return (rental id or None, error or None).

    The token is claimed with an atomic cache add before anything is written, so a double click (two requests
    at once) or a resubmitted page creates one rental; a refused submission frees its token for the retry.
    """
    token = request.POST.get("form_token", "")
    try:
        uuid.UUID(token)
    except ValueError:
        return None, RentalInvalid("This form is out of date; it was reloaded, check it and submit again.")
    key = f"rentals:form:{request.user.pk}:{token}"
    if not cache.add(key, _IN_FLIGHT, FORM_TOKEN_SECONDS):
        first = cache.get(key)
        if first == _IN_FLIGHT:
            return None, RentalInvalid("This form is already being submitted; see your rentals below.")
        return first, None
    try:
        rental = rental_submit(owner=request.user, **_parse_form(request.POST))
    except ApplicationError as exc:
        cache.delete(key)
        return None, exc
    except BaseException:
        cache.delete(key)
        raise
    cache.set(key, rental.pk, FORM_TOKEN_SECONDS)
    return rental.pk, None


def _error_field(error) -> str | None:
    """Return the form field an error is about, if it names one."""
    field = error.detail.get("field") if error is not None and isinstance(error.detail, dict) else None
    return _FORM_FIELDS.get(field, field)


@login_required
@require_http_methods(["GET", "POST"])
def rentals_page(request):
    """The buyer's rentals and the form that rents vGPUs (rental_submit, exactly once per form)."""
    error = None
    if request.method == "POST":
        rental_id, error = _submit_once(request)
        if error is None:
            messages.success(request, f"Rental {rental_id} is submitted: it waits for the next round.")
            return redirect("rental-page", rental_id=rental_id)
    rentals = rentals_for_owner(owner=request.user)
    state, pool = request.GET.get("state", ""), request.GET.get("pool", "")[:40]
    if state in RentalState.values:
        rentals = rentals.filter(state=state)
    if pool:
        rentals = rentals.filter(pool__name=pool)
    rows = [{"rental": rental, **_money(rental)} for rental in rentals[:100]]
    context = {
        "rows": rows,
        "pools": pools_with_supply(),
        "form": request.POST if error is not None else {"vgpus": "1", "max_duration_minutes": "60"},
        "form_token": uuid.uuid4(),
        "error": error,
        "error_field": _error_field(error),
        "max_vgpus": settings.RENTALS_MAX_VGPUS,
        "max_minutes": settings.RENTALS_MAX_DURATION_SECONDS // 60,
        "filter_state": state if state in RentalState.values else "",
        "filter_pool": pool,
        "states": RentalState.choices,
    }
    return render(request, "marketplace/rentals.html", context, status=error.status if error else 200)


def _owned(request, rental_id: int):
    try:
        return rental_for_owner(owner=request.user, rental_id=rental_id)
    except RentalNotFound:
        raise Http404("No such rental.") from None


@login_required
def rental_page(request, rental_id: int):
    """One rental: events, placements, money, the log so far; the live view updates it over the websocket."""
    rental = _owned(request, rental_id)
    context = {
        "rental": rental,
        "money": _money(rental),
        "ended": rental.state in TERMINAL_STATES,
        "env": rental_env_masked(rental),
        "command": shlex.join(rental.command),
        "events": rental.events.all(),
        "placements": [
            {"placement": placement, "charged": usdc(placement.buyer_charged)}
            for placement in rental.placements.select_related("node", "node_placement").order_by("pk")
        ],
        "lines": rental_log_lines(rental=rental),
        "pauses": rental_pause_log(rental=rental),
        "state_labels": dict(RentalState.choices),
        "terminal_states": sorted(TERMINAL_STATES),
        "service_urls": service_urls(rental),
        "service_stats": service_stats(rental) if rental.expose else [],
        **extend_context(rental),
        **gpu_context(rental),
    }
    return render(request, "marketplace/rental_detail.html", context)
