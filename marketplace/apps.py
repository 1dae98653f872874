from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Marketplace"

    def ready(self) -> None:
        from marketplace import receivers, signals  # noqa: F401
        from marketplace.notifications import receivers as notification_receivers  # noqa: F401
