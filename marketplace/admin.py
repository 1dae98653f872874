from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from janction.errors import ApplicationError
from marketplace.models import ApiKey, Profile
from marketplace.notifications.models import Notification, NotificationPreferences
from marketplace.services import user_suspend, user_unsuspend

User = get_user_model()


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "display_name", "region", "is_buyer", "is_provider"]
    list_filter = ["region", "is_buyer", "is_provider"]
    search_fields = ["user__email", "display_name"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "key_hash", "last_used_at"]
    search_fields = ["name", "prefix", "user__email"]


admin.site.unregister(User)


@admin.register(User)
class OperatorUserAdmin(UserAdmin):
    """Django's user admin with suspend and unsuspend actions (marketplace.services), each recorded."""

    list_display = ["email", "username", "is_active", "is_staff", "date_joined", "last_login"]
    list_filter = ["is_active", "is_staff", "is_superuser"]
    actions = ["suspend", "unsuspend"]

    @admin.action(
        permissions=["change"], description="Suspend the selected users (no sign-in, API keys, devices or new rentals)"
    )
    def suspend(self, request, queryset):
        done = 0
        for user in queryset.order_by("pk"):
            try:
                changed = user_suspend(user_id=user.pk, operator=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{user}: {exc.message}", messages.ERROR)
                continue
            if changed:
                self.log_change(request, user, "Suspended (admin action)")
                done += 1
        self.message_user(request, f"Suspended: {done} user(s).", messages.SUCCESS)

    @admin.action(permissions=["change"], description="Lift the suspension of the selected users")
    def unsuspend(self, request, queryset):
        done = 0
        for user in queryset.order_by("pk"):
            if user_unsuspend(user_id=user.pk):
                self.log_change(request, user, "Suspension lifted (admin action)")
                done += 1
        self.message_user(request, f"Unsuspended: {done} user(s).", messages.SUCCESS)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """What users were told; read-only."""

    list_display = ["id", "user", "kind", "title", "on_site", "emailed_at", "read_at", "created_at"]
    list_filter = ["kind", "on_site", ("emailed_at", admin.EmptyFieldListFilter)]
    search_fields = ["user__email", "key", "title"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


admin.site.register(NotificationPreferences)


from marketplace.rentals import admin as rentals_admin  # noqa: E402, F401 - registers RentalAdmin
from marketplace.rentals import dispute_admin  # noqa: E402, F401 - registers the dispute admin
