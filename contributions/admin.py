"""Operators review records the automatic checks left undecided: read the content, accept or reject."""

from django.contrib import admin, messages

from contributions.models import Content, DataReward, Device, Record
from contributions.review import record_review


@admin.register(Record)
class RecordAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "source", "user", "status", "reason", "quotes_others", "created_at", "accepted_at"]
    list_filter = ["status", "kind", "quotes_others"]
    search_fields = ["sha256", "user__username"]
    actions = ["accept", "reject"]
    readonly_fields = [field.name for field in Record._meta.fields] + ["content"]
    exclude = ["minhash"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # contributors delete their records; operators decide on them

    @admin.display(description="content")
    def content(self, record: Record) -> str:
        text = Content.objects.filter(sha256=record.sha256).values_list("text", flat=True).first()
        return text if text is not None else "(deleted)"

    @admin.action(description="Accept the selected pending records")
    def accept(self, request, queryset):
        for pk in queryset.filter(status=Record.Status.PENDING).values_list("pk", flat=True):
            record_review(record_id=pk, accept=True)
        messages.success(request, "Accepted the selected pending records.")

    @admin.action(description="Reject the selected pending records")
    def reject(self, request, queryset):
        for pk in queryset.filter(status=Record.Status.PENDING).values_list("pk", flat=True):
            record_review(record_id=pk, accept=False, reason="rejected by an operator")
        messages.success(request, "Rejected the selected pending records.")


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "user", "algorithm", "fingerprint", "last_counter", "created_at", "revoked_at"]
    readonly_fields = ["user", "algorithm", "fingerprint", "last_counter", "created_at"]
    exclude = ["public_key"]


@admin.register(DataReward)
class DataRewardAdmin(admin.ModelAdmin):
    list_display = ["epoch_start", "user", "records_counted", "reward"]
