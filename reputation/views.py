"""The reputation page: a user's own scores and the evidence behind them."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from reputation.selectors import reputation_overview


@login_required
def reputation_page(request):
    context = {**reputation_overview(user=request.user), "half_life": settings.REPUTATION_HALF_LIFE_DAYS}
    return render(request, "reputation/reputation.html", context)
