"""An operator slashes part of a provider's JCT stake after an upheld dispute (docs/reputation.md, staking gate).

Embedded default (no CHAIN_RPC_URL): the ledger-level stake moves (ledger.staking.stake_slash) in the transaction
that records the slash and its evidence. Real mode: Settlement.slash on chain through the chain engineer's
`ledger.settlement.stakes.slash_onchain`, keyed by a 32-byte evidence hash so a retry never slashes twice.
"""

import hashlib
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from janction.errors import ApplicationError, Conflict, ValidationFailed
from ledger.currencies import from_base_units
from ledger.fields import ExactSum
from ledger.models import StakeEvent, Wallet
from ledger.staking import stake_slash
from marketplace.rentals.dispute_models import Dispute, DisputeState, StakeSlash
from marketplace.rentals.models import RentalPlacement
from reputation.models import EvidenceKind, SubjectKind
from reputation.services import evidence_record

UPHELD_STATES = (DisputeState.REFUNDED, DisputeState.PARTIALLY_REFUNDED)
MAX_EVIDENCE_CHARS = 2000


class SlashInvalid(ValidationFailed):
    code = "slash_invalid"


class SlashNotAllowed(Conflict):
    code = "slash_not_allowed"


class SlashingUnavailable(ApplicationError):
    code = "slashing_unavailable"
    status = 503


@dataclass(frozen=True)
class SlashResult:
    slash: StakeSlash
    created: bool  # False: this dispute's slash of this provider was already recorded (nothing moved again)


def _evidence_hash(dispute_id: int, provider_id: int) -> bytes:
    return hashlib.sha256(f"janction:dispute:{dispute_id}:provider:{provider_id}".encode()).digest()


def dispute_providers(*, dispute: Dispute) -> list[int]:
    """Return the providers whose nodes served the disputed rental."""
    return sorted(
        set(RentalPlacement.objects.filter(rental_id=dispute.rental_id).values_list("provider_id", flat=True))
    )


def stake_slash_for_dispute(*, dispute_id: int, provider_id: int, amount: int, evidence: str, operator) -> SlashResult:
    """Slash `amount` JCT base units of a provider's stake for an upheld dispute of a rental it served.

    Refused: a dispute that is open or rejected (409 slash_not_allowed), a provider that did not serve the rental,
    an amount that is not a positive integer, evidence that is empty or too long (400 slash_invalid), more than the
    provider's stake (409 stake_insufficient), a second slash of the same provider for the same dispute with another
    amount (409). Nothing is stored when refused. The same slash again returns the first (created False).
    """
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise SlashInvalid("The slash is a positive number of JCT base units.", detail={"field": "amount"})
    evidence = (evidence or "").strip() if isinstance(evidence, str) else ""
    if not evidence or len(evidence) > MAX_EVIDENCE_CHARS:
        raise SlashInvalid(
            f"Write the evidence for the slash (1 to {MAX_EVIDENCE_CHARS} characters).", detail={"field": "evidence"}
        )
    with transaction.atomic():
        dispute = Dispute.objects.select_for_update().filter(pk=dispute_id).first()
        if dispute is None:
            raise SlashInvalid(f"Dispute {dispute_id} does not exist.", code="dispute_not_found", status=404)
        if dispute.state not in UPHELD_STATES:
            raise SlashNotAllowed(
                f"Dispute {dispute.pk} is {dispute.get_state_display().lower()}: only an upheld (refunded) dispute "
                "can lead to a slash.",
                code="dispute_not_upheld",
            )
        if provider_id not in dispute_providers(dispute=dispute):
            raise SlashInvalid(
                f"User {provider_id} provided no node of rental {dispute.rental_id}.", detail={"field": "provider"}
            )
        existing = StakeSlash.objects.filter(dispute=dispute, provider_id=provider_id).first()
        if existing is not None:
            if int(existing.amount) != amount:
                raise SlashNotAllowed(
                    f"Provider {provider_id} was already slashed {from_base_units(int(existing.amount), 'JCT')} JCT "
                    f"for dispute {dispute.pk}.",
                    code="slash_exists",
                )
            if existing.mode == "ledger" or existing.tx_hash:
                return SlashResult(existing, created=False)
            slash, created = existing, False  # an on-chain slash whose transaction is not recorded yet: retry it
        elif settings.CHAIN_RPC_URL:
            slash = StakeSlash.objects.create(
                dispute=dispute,
                provider_id=provider_id,
                amount=amount,
                evidence=evidence,
                operator=operator,
                mode="chain",
                account=_staking_address(provider_id=provider_id, amount=amount),
            )
            created = True
        else:
            stake_slash(
                user_id=provider_id,
                amount=amount,
                idempotency_key=f"dispute:{dispute.pk}:provider:{provider_id}",
                memo=f"Slash after dispute {dispute.pk}",
                metadata={"dispute": dispute.pk, "rental": dispute.rental_id},
            )
            slash = StakeSlash.objects.create(
                dispute=dispute,
                provider_id=provider_id,
                amount=amount,
                evidence=evidence,
                operator=operator,
                mode="ledger",
            )
            _record(slash)
            return SlashResult(slash, created=True)
    # Real mode: the chain call runs outside the transaction (it waits for the receipt); the row above was committed,
    # so a crash here leaves a row without tx_hash that the same call retries (the evidence hash is the chain's key).
    tx_hash = _slash_onchain(account=slash.account, amount=amount, evidence=_evidence_hash(dispute_id, provider_id))
    with transaction.atomic():
        StakeSlash.objects.filter(pk=slash.pk).update(tx_hash=tx_hash)
        slash.tx_hash = tx_hash
        _record(slash)
    return SlashResult(slash, created=created)


def _record(slash: StakeSlash) -> None:
    where = f"on chain ({slash.account}, {slash.tx_hash})" if slash.mode == "chain" else "ledger-level stake"
    evidence_record(
        kind=EvidenceKind.STAKE_SLASHED,
        subject_kind=SubjectKind.PROVIDER,
        user_id=slash.provider_id,
        source="slash",
        source_key=f"slash:{slash.dispute_id}:{slash.provider_id}",
        detail=f"{from_base_units(int(slash.amount), 'JCT')} JCT slashed, {where}, after dispute "
        f"{slash.dispute_id}: {slash.evidence}"[:500],
    )


def _staking_address(*, provider_id: int, amount: int) -> str:
    """Return the provider's wallet with the most recorded on-chain stake, refusing a slash above it."""
    addresses = list(Wallet.objects.filter(user_id=provider_id).values_list("address", flat=True))
    stakes = {address: 0 for address in addresses}
    rows = (
        StakeEvent.objects.filter(account__in=addresses)
        .values_list("account", "kind")
        .annotate(total=ExactSum("amount"))
        .order_by()
    )
    for account, kind, total in rows:
        # Unstake requests stay slashable through the cool-down: only withdrawals and slashes take stake away.
        sign = {StakeEvent.Kind.STAKED: 1, StakeEvent.Kind.WITHDRAWN: -1, "slashed": -1}.get(kind, 0)
        stakes[account] += sign * int(total)
    best = max(stakes, key=lambda address: stakes[address], default=None)
    if best is None or stakes[best] < amount:
        raise SlashNotAllowed(
            f"Provider {provider_id}'s recorded on-chain stake "
            f"({from_base_units(max(stakes.values(), default=0), 'JCT')}"
            " JCT on its best wallet) is less than the slash.",
            code="stake_insufficient",
        )
    return best


def _slash_onchain(*, account: str, amount: int, evidence: bytes) -> str:
    """Call the contract's slash through the chain engineer's wrapper (on main once branch `chain` is merged)."""
    try:
        from ledger.settlement.stakes import slash_onchain
    except ImportError:
        raise SlashingUnavailable(
            "This build has no on-chain slash yet (ledger.settlement.stakes.slash_onchain): slash in the embedded "
            "default, or deploy the build with the contract's slash function."
        ) from None
    return slash_onchain(account=account, amount=amount, evidence=evidence)
