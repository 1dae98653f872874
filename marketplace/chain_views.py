"""On-chain pages for the user's own wallet: deposit USDC or JCT, and stake JCT (EIP-1193 from the browser)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from ledger.currencies import from_base_units
from ledger.settlement.connection import CHAIN_DOWN_ERRORS, chain_connection_get
from ledger.settlement.selectors import chain_info, deposits_for_user, stake_for_user
from nodes.selectors import pools_with_supply
from reputation import config as reputation_config


def _unstake_cooldown_seconds() -> int | None:
    try:
        return chain_connection_get().settlement.functions.unstakeCooldown().call()
    except CHAIN_DOWN_ERRORS:
        return None


@login_required
def stake_page(request):
    """Recorded JCT stake per wallet (pending unstake, unlock time), each pool's minimum stake, and stake actions."""
    positions = stake_for_user(user_id=request.user.pk)
    total = 0
    for row in positions:
        total += int(row["staked_amount"])
        row["staked"] = from_base_units(int(row["staked_amount"]), "JCT")
        row["pending"] = from_base_units(int(row["pending_unstake_amount"]), "JCT")
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
    return render(request, "marketplace/stake.html", context)


@login_required
def deposit_page(request):
    """Deposit USDC or JCT from the user's wallet to the settlement contract; the watcher credits it."""
    deposits = list(deposits_for_user(user_id=request.user.pk)[:20])
    for deposit in deposits:
        deposit.display = from_base_units(int(deposit.amount), deposit.currency) if deposit.currency else deposit.amount
    return render(request, "marketplace/deposit.html", {"deposits": deposits, "chain": chain_info()})
