"""Create the demo accounts of the embedded default and print their passwords once."""

import secrets

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from marketplace.services import profile_update

DEMO_USERS = [
    # (username, e-mail, superuser, buyer, provider, display name)
    ("admin", "admin@janction.localhost", True, False, False, "Operator"),
    ("buyer", "buyer@janction.localhost", False, True, False, "Demo buyer"),
    ("provider", "provider@janction.localhost", False, False, True, "Demo provider"),
]


class Command(BaseCommand):
    help = "Create the demo admin, buyer and provider (verified e-mails) and print their passwords once."

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset-passwords", action="store_true", help="Give existing demo users new passwords and print them."
        )

    def handle(self, *args, reset_passwords: bool, **options):
        from django.conf import settings

        if not settings.JANCTION_EMBEDDED:
            raise CommandError("seed_demo creates well-known accounts; it runs only in the embedded default.")
        User = get_user_model()
        printed = []
        with transaction.atomic():
            for username, email, superuser, buyer, provider, display_name in DEMO_USERS:
                user = User.objects.filter(username=username).first()
                password = None
                if user is None:
                    password = secrets.token_urlsafe(12)
                    factory = User.objects.create_superuser if superuser else User.objects.create_user
                    user = factory(username=username, email=email, password=password)
                elif reset_passwords:
                    password = secrets.token_urlsafe(12)
                    user.set_password(password)
                    user.save(update_fields=["password"])
                EmailAddress.objects.update_or_create(
                    user=user, email=email, defaults={"verified": True, "primary": True}
                )
                profile_update(
                    user=user, display_name=display_name, region="eu", is_buyer=buyer or superuser, is_provider=provider
                )
                if password:
                    printed.append((email, password))
        if printed:
            self.stdout.write(self.style.SUCCESS("Demo accounts (passwords are shown only now):"))
            for email, password in printed:
                self.stdout.write(f"  {email:32} {password}")
        else:
            self.stdout.write("Demo accounts already exist; run with --reset-passwords to get new passwords.")
