"""On-chain pages for the user's own wallet: deposit USDC or JCT, and stake JCT (EIP-1193 from the browser)."""

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from janction.errors import ApplicationError
from ledger.currencies import from_base_units, read_amount
from ledger.models import Unstake
from ledger.settlement.connection import CHAIN_DOWN_ERRORS, chain_connection_get
from ledger.settlement.selectors import chain_info, deposits_for_user, stake_for_user
from ledger.staking import stake_add, stake_balances, unstake_request
from nodes.selectors import pools_with_supply
from reputation import config as reputation_config
from reputation.acts import provider_stakes


def _unstake_cooldown_seconds() -> int | None:
    try:
        return chain_connection_get().settlement.functions.unstakeCooldown().call()
    except CHAIN_DOWN_ERRORS:
        return None


@login_required
def stake_page(request):
    """Recorded JCT stake per wallet (pending unstake, unlock time), each pool's minimum stake, and stake actions."""
    positions = stake_for_user(user_id=request.user.pk)
    for row in positions:
        row["staked"] = from_base_units(int(row["staked_amount"]), "JCT")
        row["pending"] = from_base_units(int(row["pending_unstake_amount"]), "JCT")
    # What the staking gate counts: the ledger-level stake in the embedded default, the recorded on-chain one otherwise.
    total = provider_stakes(user_ids={request.user.pk}, at=timezone.now()).get(request.user.pk, 0)
    pools = []
    for pool in pools_with_supply():
        minimum = reputation_config.pool_min_stake(pool.name)
        pools.append({"name": pool.name, "minimum": from_base_units(minimum, "JCT"), "met": total >= minimum})
    cooldown = _unstake_cooldown_seconds()
    context = {
        "positions": positions,
        "total": from_base_units(total, "JCT"),
        "pools": pools,
        "cooldown_hours": None if cooldown is None else round(cooldown / 3600, 2),
        "chain": chain_info(),
    }
    if not settings.CHAIN_RPC_URL:
        balance = stake_balances(user_ids={request.user.pk})[request.user.pk]
        context["ledger_stake"] = {
            "staked": from_base_units(balance.staked, "JCT"),
            "unstaking": from_base_units(balance.unstaking, "JCT"),
            "unstakes": [
                {
                    "amount": from_base_units(int(unstake.amount), "JCT"),
                    "slashed": from_base_units(int(unstake.slashed), "JCT") if unstake.slashed else None,
                    "release_at": unstake.release_at,
                }
                for unstake in Unstake.objects.filter(user=request.user, released_at__isnull=True).order_by("pk")
            ],
            "form_token": uuid.uuid4().hex,
        }
    return render(request, "marketplace/stake.html", context)


@login_required
@require_POST
def ledger_stake_action(request):
    """Stake or request an unstake of ledger-level JCT (the embedded default's stand-in for the on-chain stake).

    The form's one-time token is the idempotency key, so a resubmitted form moves nothing more.
    """
    if settings.CHAIN_RPC_URL:
        raise Http404("Stake on chain from your wallet: the ledger-level stake exists only in the embedded default.")
    action = request.POST.get("action")
    token = request.POST.get("form_token", "")
    if action not in ("stake", "unstake") or not 1 <= len(token) <= 64:
        messages.error(request, "This form is out of date; reload the page and press the button again.")
        return redirect("stake-page")
    try:
        amount = read_amount(request.POST.get("amount", ""), "JCT")
        if action == "stake":
            stake_add(user_id=request.user.pk, amount=amount, idempotency_key=f"page:{token}")
        else:
            unstake_request(user_id=request.user.pk, amount=amount, idempotency_key=f"page:{token}")
    except ApplicationError as exc:
        messages.error(request, f"Amount: {exc.message}")
    else:
        done = "Staked" if action == "stake" else "Requested an unstake of"
        messages.success(request, f"{done} {from_base_units(amount, 'JCT')} JCT.")
    return redirect("stake-page")


@login_required
def deposit_page(request):
    """Deposit USDC or JCT from the user's wallet to the settlement contract; the watcher credits it."""
    deposits = list(deposits_for_user(user_id=request.user.pk)[:20])
    for deposit in deposits:
        deposit.display = from_base_units(int(deposit.amount), deposit.currency) if deposit.currency else deposit.amount
    return render(request, "marketplace/deposit.html", {"deposits": deposits, "chain": chain_info()})
