"""Operators' view of rentals: read-only records, and a cancel-with-refund action that calls rental_cancel."""

from django.contrib import admin, messages

from janction.errors import ApplicationError
from ledger.currencies import from_base_units
from marketplace.rentals.models import Rental, RentalEvent, RentalPlacement
from marketplace.rentals.services import TERMINAL_STATES, rental_cancel


class RentalEventInline(admin.TabularInline):
    model = RentalEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ["at", "from_state", "to_state", "reason"]

    def has_add_permission(self, request, obj=None):
        return False


class RentalPlacementInline(admin.TabularInline):
    model = RentalPlacement
    extra = 0
    can_delete = False
    fields = readonly_fields = ["placement_id", "node", "vgpu_count", "observed_state", "exit_code", "settled_at"]

    def has_add_permission(self, request, obj=None):
        return False


def _usdc(amount: int) -> str:
    return from_base_units(amount, "USDC")


@admin.register(Rental)
class RentalAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "owner",
        "state",
        "pool",
        "vgpus",
        "max_price",
        "held",
        "charged_usdc",
        "refunded_usdc",
        "created_at",
    ]
    list_filter = ["state", "pool", "restart_on_interruption"]
    search_fields = ["=id", "owner__email", "image"]
    date_hierarchy = "created_at"
    inlines = [RentalPlacementInline, RentalEventInline]
    actions = ["cancel_with_refund"]
    exclude = ["env"]  # secret values stay out of the admin; the masked listing is the buyer's page

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Rental._meta.fields if f.name != "env"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Max price (USDC/vGPU-h)", ordering="max_price_per_hour")
    def max_price(self, rental):
        return _usdc(rental.max_price_per_hour)

    @admin.display(description="Held (USDC)", ordering="escrow_held")
    def held(self, rental):
        return _usdc(rental.escrow_held)

    @admin.display(description="Charged (USDC)", ordering="charged")
    def charged_usdc(self, rental):
        return _usdc(rental.charged)

    @admin.display(description="Refunded (USDC)", ordering="refunded")
    def refunded_usdc(self, rental):
        return _usdc(rental.refunded)

    @admin.action(description="Cancel with refund: stop, bill until now, return the unused escrow")
    def cancel_with_refund(self, request, queryset):
        done = 0
        for rental in queryset.select_related("owner").order_by("pk"):
            if rental.state in TERMINAL_STATES:
                self.message_user(request, f"Rental {rental.pk} already ended ({rental.state}).", messages.WARNING)
                continue
            try:
                rental_cancel(owner=rental.owner, rental_id=rental.pk)
            except ApplicationError as exc:
                self.message_user(request, f"Rental {rental.pk}: {exc.message}", messages.ERROR)
                continue
            self.log_change(request, rental, "Cancelled with refund (admin action)")
            done += 1
        if done:
            self.message_user(
                request, f"Cancelled {done} rental(s); their unused escrow is refunded.", messages.SUCCESS
            )
