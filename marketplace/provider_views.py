"""Provider pages beyond the node list: a node's ask (set, change, pause), drain, and claimable payouts."""

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from janction.errors import ApplicationError
from ledger.currencies import from_base_units, to_base_units
from ledger.settlement.claims import settlement_claim_send_embedded
from ledger.settlement.selectors import chain_info, claimable_for_user
from nodes.services import node_drain, node_set_ask, node_undrain


def _price(text: str) -> int | None:
    """Return an ask typed in the form as USDC base units, or None if it is not a valid ask."""
    try:
        value = to_base_units(text, "USDC", allow_zero=True)
    except ApplicationError:
        return None
    return value if value <= to_base_units(settings.PRICING_MAX_RESERVE_PRICE, "USDC") else None


@login_required
@require_POST
def node_ask_page(request, node_id: int):
    """Set or change a node's ask and pause or resume it (node_set_ask)."""
    text = request.POST.get("reserve_price", "").strip()
    price = _price(text)
    if price is None:
        messages.error(
            request,
            f"Ask: give USDC per vGPU-hour with at most 6 decimals, from 0 to {settings.PRICING_MAX_RESERVE_PRICE}; "
            f"{text[:40]!r} is not one.",
        )
        return redirect(f"/nodes/#node-{node_id}")
    paused = request.POST.get("paused") == "on"
    try:
        node = node_set_ask(owner=request.user, node_id=node_id, reserve_price_per_hour=price, paused=paused)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        state = "paused: it sells nothing until you resume it" if paused else "on sale"
        messages.success(request, f"{node.name}: ask {from_base_units(price, 'USDC')} USDC per vGPU-hour, {state}.")
    return redirect(f"/nodes/#node-{node_id}")


@login_required
@require_POST
def node_drain_page(request, node_id: int):
    """Drain a node (stop selling; running work finishes) or put a drained one back on sale."""
    undrain = request.POST.get("undrain") == "1"
    try:
        node = (
            node_undrain(owner=request.user, node_id=node_id)
            if undrain
            else node_drain(owner=request.user, node_id=node_id)
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"{node.name} is {'back on sale' if undrain else 'draining: nothing new is sold on it'}."
        )
    return redirect(f"/nodes/#node-{node_id}")


@login_required
def payouts_page(request):
    """What the provider can claim on chain (the claimable batch), what a batch in its claim delay will make
    claimable and when, and what no batch carries yet; claim buttons (browser wallet, or the demo chain's server)."""
    claimable = claimable_for_user(user_id=request.user.pk, with_proofs=True)
    unpublished = [
        {"currency": row["currency"], "amount": from_base_units(int(row["amount"]), row["currency"])}
        for row in claimable["unpublished"]
    ]
    for row in claimable["leaves"]:
        row["proof_json"] = json.dumps(row["proof"])
        row["leaf_json"] = json.dumps(row["leaf"])
        row["can_claim"] = int(row["claimable_amount"]) > 0
    pending = claimable["pending"]
    if pending:
        for row in pending["leaves"]:
            row["cumulative"] = from_base_units(int(row["cumulative_amount"]), row["currency"])
    context = {
        "batch": claimable["batch"],
        "leaves": claimable["leaves"],
        "pending": pending,
        "unpublished": unpublished,
        "chain": chain_info(),
    }
    return render(request, "marketplace/payouts.html", context)


@login_required
@require_POST
def payout_claim_page(request):
    """The embedded demo chain's server-side claim of one of the caller's leaves (no wallet can reach that chain)."""
    try:
        claim = settlement_claim_send_embedded(
            user_id=request.user.pk,
            account=request.POST.get("account", "")[:100],
            currency=request.POST.get("currency", "")[:10],
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        amount = from_base_units(int(claim["amount"]), claim["currency"])
        messages.success(
            request,
            f"Demo chain: the server claimed {amount} {claim['currency']} for {claim['account']} "
            f"in transaction {claim['tx_hash']}.",
        )
    return redirect("payouts-page")
