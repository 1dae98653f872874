from django.apps import AppConfig


class PricingConfig(AppConfig):
    name = "pricing"
    verbose_name = "Pricing"

    def ready(self) -> None:
        from nodes.hooks import default_reserve_price_provide
        from pricing.services import default_reserve_price

        default_reserve_price_provide(default_reserve_price)
