"""Operators resolve disputes in the admin: refund in full, refund part, or reject, with a note."""

from django import forms
from django.contrib import admin, messages

from janction.errors import ApplicationError
from ledger.currencies import to_base_units
from marketplace.models import Dispute, DisputeState
from marketplace.rentals.disputes import dispute_resolve


class DisputeResolveForm(forms.ModelForm):
    outcome = forms.ChoiceField(
        choices=[("", "—"), ("refund", "Refund the whole charge"), ("partial", "Refund part"), ("reject", "Reject")],
        required=False,
    )
    refund_usdc = forms.CharField(required=False, help_text="For a partial refund: USDC, e.g. 1.25")
    resolution_note = forms.CharField(required=False, widget=forms.Textarea)

    class Meta:
        model = Dispute
        fields = []

    def clean(self):
        data = super().clean()
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
