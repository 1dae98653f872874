"""Operators resolve disputes in the admin: refund in full, refund part, or reject, with a note."""

from django import forms
from django.contrib import admin, messages

from janction.errors import ApplicationError
from ledger.currencies import from_base_units, to_base_units
from marketplace.models import Dispute, DisputeState
from marketplace.rentals.disputes import dispute_resolve
from marketplace.rentals.slashing import dispute_providers, stake_slash_for_dispute


class DisputeResolveForm(forms.ModelForm):
    outcome = forms.ChoiceField(
        choices=[("", "—"), ("refund", "Refund the whole charge"), ("partial", "Refund part"), ("reject", "Reject")],
        required=False,
    )
    refund_usdc = forms.CharField(required=False, help_text="For a partial refund: USDC, e.g. 1.25")
    resolution_note = forms.CharField(required=False, widget=forms.Textarea)
    slash_provider = forms.TypedChoiceField(
        coerce=int, required=False, empty_value=None, help_text="After an upheld dispute: whose stake to slash."
    )
    slash_jct = forms.CharField(required=False, help_text="JCT to slash, e.g. 25 (at most the provider's stake).")
    slash_evidence = forms.CharField(
        required=False, widget=forms.Textarea, help_text="Why: recorded with the slash as reputation evidence."
    )

    class Meta:
        model = Dispute
        fields = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        providers = dispute_providers(dispute=self.instance) if self.instance.pk else []
        self.fields["slash_provider"].choices = [("", "—"), *((pk, f"user {pk}") for pk in providers)]

    def clean(self):
        data = super().clean()
        if data.get("slash_jct"):
            try:
                data["slash_amount"] = to_base_units(data["slash_jct"].strip(), "JCT")
            except ApplicationError as error:
                raise forms.ValidationError({"slash_jct": error.message}) from None
            if data.get("slash_provider") is None:
                raise forms.ValidationError({"slash_provider": "Choose whose stake to slash."})
            if not (data.get("slash_evidence") or "").strip():
                raise forms.ValidationError({"slash_evidence": "Write the evidence for the slash."})
        if data.get("outcome") == "partial":
            try:
                data["refund"] = to_base_units(data.get("refund_usdc") or "", "USDC")
            except ApplicationError as error:
                raise forms.ValidationError({"refund_usdc": error.message}) from None
            if data["refund"] > self.instance.rental.charged:
                raise forms.ValidationError({"refund_usdc": "The refund is larger than what the rental charged."})
        return data


@admin.register(Dispute)
class DisputeAdmin(admin.ModelAdmin):
    form = DisputeResolveForm
    list_display = ["pk", "rental", "buyer", "state", "refund", "created_at", "resolved_at"]
    list_filter = ["state"]
    readonly_fields = [
        "rental",
        "buyer",
        "reason",
        "state",
        "refund",
        "note",
        "resolved_by",
        "resolved_at",
        "created_at",
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        self._resolve(request, obj, form)
        if form.cleaned_data.get("slash_amount"):
            self._slash(request, obj, form)

    def _slash(self, request, obj, form):
        """Slash the chosen provider's stake (stake_slash_for_dispute refuses it unless the dispute was upheld)."""
        amount = form.cleaned_data["slash_amount"]
        try:
            result = stake_slash_for_dispute(
                dispute_id=obj.pk,
                provider_id=form.cleaned_data["slash_provider"],
                amount=amount,
                evidence=form.cleaned_data["slash_evidence"],
                operator=request.user,
            )
        except ApplicationError as error:
            messages.error(request, f"Not slashed: {error.message}")
            return
        if result.created:
            slash = result.slash
            where = f"on chain, transaction {slash.tx_hash}" if slash.mode == "chain" else "from the ledger-level stake"
            text = f"Slashed {from_base_units(amount, 'JCT')} JCT of user {slash.provider_id}'s stake {where}"
            self.log_change(request, obj, f"{text}: {slash.evidence}"[:500])
            messages.success(request, text)

    def _resolve(self, request, obj, form):
        outcome = form.cleaned_data.get("outcome")
        if not outcome or obj.state != DisputeState.OPEN:
            return
        try:
            dispute_resolve(
                dispute_id=obj.pk,
                outcome=outcome,
                operator=request.user,
                refund=form.cleaned_data.get("refund"),
                note=form.cleaned_data.get("resolution_note", ""),
            )
        except ApplicationError as error:
            messages.error(request, error.message)
