"""Payout wallets: linking an EVM address to a user by a signed Sign-In-With-Ethereum message (EIP-4361).

The ledger owns wallets because settlement pays out to them, the chain watcher credits deposits from
them and stakes are counted over them; the marketplace's pages and API only call these services.
"""

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

from ledger.errors import NonceInvalid, WalletNotFound, WalletTaken, WalletVerificationFailed
from ledger.models import SiweNonce, Wallet

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
