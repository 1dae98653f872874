"""Account writes: profiles, API keys and SIWE wallet linking."""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from eth_account import Account as EthAccount
from eth_account.messages import encode_defunct
from eth_utils import is_address, to_checksum_address

from marketplace.errors import (
    ApiKeyNameTaken,
    ApiKeyNotFound,
    NonceInvalid,
    WalletNotFound,
    WalletTaken,
    WalletVerificationFailed,
)
from marketplace.models import ApiKey, Profile, SiweNonce, Wallet

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


def api_key_create(*, user, name: str) -> tuple[ApiKey, str]:
    """Create an API key and return it with its plaintext, which is never stored or shown again."""
    prefix = secrets.token_hex(6)
    raw_key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    try:
        with transaction.atomic():
            api_key = ApiKey.objects.create(user=user, name=name, prefix=prefix, key_hash=_hash_key(raw_key))
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


# --- Sign-In-With-Ethereum wallet linking (EIP-4361) ----------------------------------------------------------

SIWE_STATEMENT = "Link this wallet to my Janction account."

_SIWE_PATTERN = re.compile(
    r"^(?P<domain>[^\s]+) wants you to sign in with your Ethereum account:\n"
    r"(?P<address>0x[0-9a-fA-F]{40})\n\n"
    r"(?:(?P<statement>[^\n]+)\n\n)?"
    r"URI: (?P<uri>[^\n]+)\n"
    r"Version: (?P<version>[^\n]+)\n"
    r"Chain ID: (?P<chain_id>[0-9]+)\n"
    r"Nonce: (?P<nonce>[A-Za-z0-9]{8,})\n"
    r"Issued At: (?P<issued_at>[^\n]+)"
    r"(?:\nExpiration Time: (?P<expiration_time>[^\n]+))?"
    r"(?:\nNot Before: (?P<not_before>[^\n]+))?"
    r"(?:\nRequest ID: (?P<request_id>[^\n]*))?"
    r"(?:\nResources:(?P<resources>(?:\n- [^\n]+)+))?$"
)


@dataclass(frozen=True)
class SiweChallenge:
    nonce: str
    message: str
    expires_at: datetime


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WalletVerificationFailed(f"The message's {field} {text!r} is not an ISO-8601 time.") from None
    if moment.tzinfo is None:
        raise WalletVerificationFailed(f"The message's {field} must carry a time zone.")
    return moment


def wallet_challenge_create(*, user, address: str) -> SiweChallenge:
    """Issue a single-use nonce and the exact EIP-4361 message the wallet at `address` should sign."""
    if not isinstance(address, str) or not is_address(address):
        raise WalletVerificationFailed(f"{address!r} is not an Ethereum address (0x followed by 40 hex digits).")
    checksummed = to_checksum_address(address)
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.SIWE_NONCE_TTL_SECONDS)
    nonce = secrets.token_hex(16)
    message = (
        f"{settings.SIWE_DOMAIN} wants you to sign in with your Ethereum account:\n"
        f"{checksummed}\n\n"
        f"{SIWE_STATEMENT}\n\n"
        f"URI: {settings.SIWE_URI}\n"
        f"Version: 1\n"
        f"Chain ID: {settings.SIWE_CHAIN_ID}\n"
        f"Nonce: {nonce}\n"
        f"Issued At: {_iso(now)}\n"
        f"Expiration Time: {_iso(expires_at)}"
    )
    SiweNonce.objects.create(user=user, nonce=nonce, address=checksummed, message=message, expires_at=expires_at)
    return SiweChallenge(nonce=nonce, message=message, expires_at=expires_at)


def wallet_link(*, user, message: str, signature: str) -> Wallet:
    """Verify a signed SIWE message against a nonce issued to `user` and link the signer's address."""
    if not isinstance(message, str) or not isinstance(signature, str):
        raise WalletVerificationFailed("Send the signed message and its signature as strings.")
    match = _SIWE_PATTERN.match(message.replace("\r\n", "\n"))
    if match is None:
        raise WalletVerificationFailed("The message is not an EIP-4361 (Sign-In with Ethereum) message.")
    fields = match.groupdict()
    now = timezone.now()
    nonce = SiweNonce.objects.filter(user=user, nonce=fields["nonce"]).first()
    if nonce is None:
        raise NonceInvalid("This nonce was not issued to you; request a new one.")
    if nonce.used_at is not None:
        raise NonceInvalid("This nonce was already used; request a new one.")
    if nonce.expires_at <= now:
        raise NonceInvalid("This nonce has expired; request a new one and sign within 10 minutes.")
    _check_message_fields(fields, now)
    try:
        signer = EthAccount.recover_message(encode_defunct(text=message), signature=signature)
    except Exception:  # eth_account raises several unrelated types for malformed signatures
        raise WalletVerificationFailed("The signature is malformed; send the 65-byte hex signature.") from None
    claimed = to_checksum_address(fields["address"])
    if signer != claimed:
        raise WalletVerificationFailed(f"The signature was made by {signer}, not by {claimed}.")
    with transaction.atomic():
        consumed = SiweNonce.objects.filter(pk=nonce.pk, used_at__isnull=True).update(used_at=now)
        if not consumed:
            raise NonceInvalid("This nonce was already used; request a new one.")
        existing = Wallet.objects.select_for_update().filter(address=claimed).first()
        if existing is not None:
            if existing.user_id == user.pk:
                return existing
            raise WalletTaken(f"{claimed} is already linked to another account.")
        try:
            with transaction.atomic():
                return Wallet.objects.create(user=user, address=claimed, chain_id=int(fields["chain_id"]))
        except IntegrityError:
            raise WalletTaken(f"{claimed} is already linked to another account.") from None


def _check_message_fields(fields: dict, now: datetime) -> None:
    if fields["domain"] != settings.SIWE_DOMAIN:
        raise WalletVerificationFailed(f"The message is for {fields['domain']!r}; sign one for {settings.SIWE_DOMAIN}.")
    if fields["uri"] != settings.SIWE_URI:
        raise WalletVerificationFailed(f"The message's URI must be {settings.SIWE_URI}.")
    if fields["version"] != "1":
        raise WalletVerificationFailed("Only SIWE message version 1 is supported.")
    if int(fields["chain_id"]) != settings.SIWE_CHAIN_ID:
        raise WalletVerificationFailed(f"The message's chain id must be {settings.SIWE_CHAIN_ID}.")
    issued_at = _parse_time(fields["issued_at"], "issued-at time")
    if issued_at > now + timedelta(minutes=1):
        raise WalletVerificationFailed("The message's issued-at time is in the future.")
    if fields["expiration_time"] and _parse_time(fields["expiration_time"], "expiration time") <= now:
        raise WalletVerificationFailed("The message has expired; request a new nonce.")
    if fields["not_before"] and _parse_time(fields["not_before"], "not-before time") > now:
        raise WalletVerificationFailed("The message is not valid yet (see its Not Before time).")


def wallet_unlink(*, user, wallet_id: int) -> None:
    """Remove one of the user's linked wallets."""
    deleted, _ = Wallet.objects.filter(user=user, pk=wallet_id).delete()
    if not deleted:
        raise WalletNotFound(f"You have no linked wallet with id {wallet_id}.")
