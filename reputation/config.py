"""Reputation settings, parsed and checked once per call (tests change them)."""

from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from reputation.beta import MICRO, decay_factor

MAX_PRIOR_UNITS = 1000


def factor() -> int:
    return decay_factor(settings.REPUTATION_HALF_LIFE_DAYS)


def _units(name: str, text: str, *, high: Decimal) -> Decimal:
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise ImproperlyConfigured(f"{name}={text!r} is not a number.") from exc
    if not (0 <= value <= high):
        raise ImproperlyConfigured(f"{name}={text!r} must lie in [0, {high}].")
    return value


def priors() -> tuple[int, int]:
    """Return the Beta prior (positive, negative) in micro-units; both zero would leave a new subject undefined."""
    positive = _units("REPUTATION_PRIOR_POSITIVE", settings.REPUTATION_PRIOR_POSITIVE, high=Decimal(MAX_PRIOR_UNITS))
    negative = _units("REPUTATION_PRIOR_NEGATIVE", settings.REPUTATION_PRIOR_NEGATIVE, high=Decimal(MAX_PRIOR_UNITS))
    if positive + negative == 0:
        raise ImproperlyConfigured("REPUTATION_PRIOR_POSITIVE + REPUTATION_PRIOR_NEGATIVE must be positive.")
    return int(positive * MICRO), int(negative * MICRO)


def _per_pool(default: str, overrides_text: str, pool_name: str) -> str:
    overrides = {}
    for pair in filter(None, (p.strip() for p in overrides_text.split(","))):
        name, _, value = pair.partition("=")
        overrides[name.strip()] = value.strip()
    return overrides.get(pool_name, default)


def pool_min_stake(pool_name: str) -> int:
    """Return the least JCT stake (base units) a provider needs for its nodes to enter `pool_name`'s rounds."""
    text = _per_pool(settings.REPUTATION_POOL_MIN_STAKE_JCT, settings.REPUTATION_POOL_MIN_STAKES_JCT, pool_name)
    return int(_units("REPUTATION_POOL_MIN_STAKE(S)_JCT", text, high=Decimal(10**12)) * 10**18)


def pool_min_score(pool_name: str) -> Decimal:
    """Return the least score a node needs for its asks to enter `pool_name`'s rounds."""
    overrides = {}
    for pair in filter(None, (p.strip() for p in settings.REPUTATION_POOL_MIN_SCORES.split(","))):
        name, _, score = pair.partition("=")
        overrides[name.strip()] = score.strip()
    text = overrides.get(pool_name, settings.REPUTATION_POOL_MIN_SCORE)
    return _units("REPUTATION_POOL_MIN_SCORE(S)", text, high=Decimal(1))
