from django.contrib import admin

from marketplace.models import ApiKey, Profile


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


from marketplace.rentals import admin as rentals_admin  # noqa: E402, F401 - registers RentalAdmin
from marketplace.rentals import dispute_admin  # noqa: E402, F401 - registers the dispute admin
