"""Account writes: profiles and API keys (wallet linking is ledger.wallets)."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from marketplace.errors import ApiKeyNameTaken, ApiKeyNotFound, UserSuspendRefused
from marketplace.models import ApiKey, Profile

User = get_user_model()

API_KEY_PREFIX = "jct"
# How often a key's last-used time is written at most: one write per request would be a hot row.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def profile_update(*, user, display_name: str, region: str, is_buyer: bool, is_provider: bool) -> Profile:
    """Change a user's profile."""
    profile, _ = Profile.objects.get_or_create(user=user)
    profile.display_name = display_name
    profile.region = region
    profile.is_buyer = is_buyer
    profile.is_provider = is_provider
    profile.save(update_fields=["display_name", "region", "is_buyer", "is_provider", "updated_at"])
    return profile


# --- API keys -------------------------------------------------------------------------------------------------


def _hash_key(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, user, name: str, service_rental=None) -> tuple[ApiKey, str]:
    """Create an API key and return it with its plaintext, which is never stored or shown again.

    With `service_rental` the key opens only that rental's service endpoint, not the account API.
    """
    prefix = secrets.token_hex(6)
    raw_key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    try:
        with transaction.atomic():
            api_key = ApiKey.objects.create(
                user=user, name=name, prefix=prefix, key_hash=_hash_key(raw_key), service_rental=service_rental
            )
    except IntegrityError:
        raise ApiKeyNameTaken(f"You already have an active API key named {name!r}; pick another name.") from None
    return api_key, raw_key


def api_key_revoke(*, user, key_id: int) -> ApiKey:
    """Revoke one of the user's API keys; revoking twice is harmless."""
    api_key = ApiKey.objects.filter(user=user, pk=key_id).first()
    if api_key is None:
        raise ApiKeyNotFound(f"You have no API key with id {key_id}.")
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """Return the active key matching `raw_key`, recording its use, or None."""
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=parts[1], revoked_at__isnull=True).first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, _hash_key(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# -- Operators: suspend and unsuspend a user -----------------------------------------------------------------


def user_suspend(*, user_id: int, operator) -> bool:
    """Suspend a user: they cannot sign in, use API keys or extension devices, or rent; return whether it changed.

    Suspension is Django's `is_active = False`, which every way in already checks (sessions end at the next
    request). What already runs is left alone: running rentals go on until they end, and the operator cancels
    them with a refund from the Rental admin if needed; a provider's nodes stay on sale unless quarantined.
    """
    if user_id == operator.pk:
        raise UserSuspendRefused("You cannot suspend yourself.")
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is None:
            raise UserSuspendRefused(f"User {user_id} does not exist.")
        if user.is_superuser and not operator.is_superuser:
            raise UserSuspendRefused("Only a superuser may suspend a superuser.")
        if not user.is_active:
            return False
        user.is_active = False
        user.save(update_fields=["is_active"])
    return True


def user_unsuspend(*, user_id: int) -> bool:
    """Lift a suspension; return whether it changed. API keys and devices work again as they were."""
    return bool(User.objects.filter(pk=user_id, is_active=False).update(is_active=True))
