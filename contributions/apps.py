from django.apps import AppConfig


class ContributionsConfig(AppConfig):
    name = "contributions"
    verbose_name = "Data contributions"

    def ready(self) -> None:
        from contributions import rewards

        rewards.hooks_register()
