from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        from marketplace import receivers, signals  # noqa: F401
        from marketplace.models import Profile
        from marketplace.notifications import receivers as notification_receivers  # noqa: F401
        from pricing.locality import region_source_set

        # Placement ties for multi-node rentals prefer the buyer's region (pricing.locality).
        region_source_set(
            lambda user_ids: dict(Profile.objects.filter(user_id__in=user_ids).values_list("user_id", "region"))
        )
