"""Browser pages: the landing page and the signed-in dashboard."""

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from janction.errors import ApplicationError
from ledger.currencies import from_base_units, to_base_units
from ledger.models import Wallet
from ledger.selectors import balances_for_user, entries_for_user
from marketplace.models import ApiKey
from marketplace.services import api_key_create, api_key_revoke


def home(request):
    return render(request, "marketplace/home.html")


@login_required
def dashboard(request):
    balances = [
        {"account": account, "amount": from_base_units(int(account.balance), account.currency)}
        for account in balances_for_user(user_id=request.user.pk)
    ]
    entries = [
        {"entry": entry, "amount": from_base_units(int(entry.amount), entry.currency)}
        for entry in entries_for_user(user_id=request.user.pk)[:20]
    ]
    context = {"balances": balances, "entries": entries, "faucet_token": uuid.uuid4()}
    return render(request, "marketplace/dashboard.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request):
    new_key = None
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        if not name or len(name) > 80:
            messages.error(request, "Give the key a name of 1 to 80 characters.")
        else:
            try:
                _, new_key = api_key_create(user=request.user, name=name)
            except ApplicationError as exc:
                messages.error(request, exc.message)
    keys = ApiKey.objects.filter(user=request.user).order_by("-created_at")
    return render(request, "marketplace/api_keys.html", {"keys": keys, "new_key": new_key})


@login_required
@require_POST
def api_key_revoke_view(request, key_id: int):
    try:
        api_key_revoke(user=request.user, key_id=key_id)
        messages.success(request, "The key is revoked.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("api-keys-page")


@login_required
def wallets(request):
    return render(request, "marketplace/wallets.html", {"wallets": Wallet.objects.filter(user=request.user)})


@login_required
@require_http_methods(["GET", "POST"])
def nodes_page(request):
    """A provider's nodes, with a form that creates one and shows its enrollment command once."""
    from nodes.selectors import nodes_for_owner
    from nodes.services import node_create
    from pricing.services import default_reserve_price

    ticket = None
    default_price = from_base_units(default_reserve_price(), "USDC")
    if request.method == "POST":
        name = request.POST.get("name", "").strip()
        price = _reserve_price(request.POST.get("reserve_price", "").strip() or default_price)
        if not name or len(name) > 80:
            messages.error(request, "Give the node a name of 1 to 80 characters.")
        elif price is None:
            messages.error(
                request,
                f"Give the ask as USDC per vGPU-hour, e.g. {default_price}: at most 6 decimals and at most "
                f"{settings.PRICING_MAX_RESERVE_PRICE}.",
            )
        else:
            try:
                ticket = node_create(owner=request.user, name=name, reserve_price_per_hour=price)
            except ApplicationError as exc:
                messages.error(request, exc.message)
    nodes = [
        {"node": node, "price": from_base_units(node.reserve_price_per_hour, "USDC")}
        for node in nodes_for_owner(owner=request.user)
    ]
    return render(request, "marketplace/nodes.html", {"nodes": nodes, "ticket": ticket, "default_price": default_price})


def _reserve_price(text: str) -> int | None:
    """Return a reserve price typed in the node form as USDC base units, or None if it is not a valid price."""
    try:
        value = to_base_units(text, "USDC", allow_zero=True)
    except ApplicationError:
        return None
    return value if value <= to_base_units(settings.PRICING_MAX_RESERVE_PRICE, "USDC") else None


def market_page(request):
    """The public market: every pool's supply, demand and last prices, and the latest rounds."""
    from pricing.models import MarketRound
    from pricing.selectors import pool_markets

    rounds = MarketRound.objects.select_related("pool").order_by("-created_at", "-pk")[:20]
    return render(request, "marketplace/market.html", {"pools": pool_markets(), "rounds": rounds})
