"""Browser pages for one's own account: the profile form and the embedded demo's faucet and wallet buttons."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from janction.errors import ApplicationError
from ledger.currencies import from_base_units
from marketplace.demo import DEMO_FAUCET_CURRENCY, demo_faucet_credit, demo_wallet_link
from marketplace.models import Profile, Region
from marketplace.notifications.views import preferences_form
from marketplace.services import profile_update


class ProfileForm(forms.Form):
    display_name = forms.CharField(max_length=80, required=False, label="Display name")
    region = forms.ChoiceField(choices=Region.choices)
    is_buyer = forms.BooleanField(required=False, label="I rent GPUs (buyer)")
    is_provider = forms.BooleanField(required=False, label="I offer GPUs (provider)")

    def clean(self):
        data = super().clean()
        if not (data.get("is_buyer") or data.get("is_provider")):
            raise forms.ValidationError("Keep at least one role: buyer or provider.")
        return data


@login_required
@require_http_methods(["GET", "POST"])
def profile_page(request):
    """The user's display name, region and roles."""
    profile, _ = Profile.objects.get_or_create(user=request.user)
    if request.method == "POST":
        form = ProfileForm(request.POST)
        if form.is_valid():
            profile_update(user=request.user, **{name: form.cleaned_data[name] for name in ProfileForm.base_fields})
            messages.success(request, "Your profile is saved.")
            return redirect("profile-page")
    else:
        form = ProfileForm(
            initial={
                "display_name": profile.display_name,
                "region": profile.region,
                "is_buyer": profile.is_buyer,
                "is_provider": profile.is_provider,
            }
        )
    return render(
        request,
        "marketplace/profile.html",
        {
            "form": form,
            "notify_form": preferences_form(request.user),
            "escrow_low_percent": settings.NOTIFICATIONS_ESCROW_LOW_PERCENT,
        },
        status=400 if form.errors else 200,
    )


def _embedded_only() -> None:
    if not settings.JANCTION_EMBEDDED:
        raise Http404("Demo actions exist only in the embedded default.")


@login_required
@require_POST
def demo_faucet_page(request):
    """Credit demo USDC (embedded default only); a resubmitted form credits nothing more."""
    _embedded_only()
    try:
        amount = demo_faucet_credit(user=request.user, token=request.POST.get("form_token", ""))
    except ValueError:
        messages.error(request, "This form is out of date; reload the page and press the button again.")
    else:
        messages.success(
            request, f"Credited {from_base_units(amount, DEMO_FAUCET_CURRENCY)} demo USDC (not real money)."
        )
    return redirect("dashboard")


@login_required
@require_POST
def demo_wallet_page(request):
    """Link a demo wallet whose key the server makes and throws away (embedded default only)."""
    _embedded_only()
    try:
        wallet = demo_wallet_link(user=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, f"Linked demo wallet {wallet.address}. Its key was thrown away: it can receive, never sign."
        )
    return redirect("wallets-page")
