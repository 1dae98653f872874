"""Proof of Contribution records: each scored epoch and every provider's score in it.

The tables kept the names they had when the ledger app owned them (`ledger_contributionepoch`, ...).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Cast
from django.db.models.lookups import LessThanOrEqual

from ledger.fields import BaseUnitsField

_WHOLE_NUMBER = models.DecimalField(max_digits=78, decimal_places=0)


# Scores are integer micro-points: one delivered vGPU-hour at weight 1 is 1,000,000.
_WEIGHT = {"max_digits": 12, "decimal_places": 6}


class ContributionEpoch(models.Model):
    """One scored Proof-of-Contribution epoch [start, end) and the JCT it emitted."""

    start = models.DateTimeField(unique=True)
    end = models.DateTimeField()
    # JCT base units: what the settings offered, and what went out (0 when nobody contributed).
    emission = BaseUnitsField()
    distributed = BaseUnitsField()
    total_score = BaseUnitsField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "ledger_contributionepoch"
        ordering = ["-start"]
        constraints = [
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="ledger_poc_epoch_positive"),
            # Compared as numbers: SQLite stores base units as text, where "5…" > "1…" whatever the lengths.
            models.CheckConstraint(
                condition=Q(distributed__gte=0)
                & Q(LessThanOrEqual(Cast("distributed", _WHOLE_NUMBER), Cast("emission", _WHOLE_NUMBER))),
                name="ledger_poc_epoch_distributed_bounded",
            ),
        ]

    def __str__(self) -> str:
        return f"epoch {self.start:%Y-%m-%d %H:%M} ({self.distributed} JCT base units)"


class ContributionScore(models.Model):
    """A provider's score in one epoch, with every input it was computed from, and its JCT reward."""

    epoch = models.ForeignKey(ContributionEpoch, on_delete=models.CASCADE, related_name="scores")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="contribution_scores")
    vgpu_milliseconds = models.PositiveBigIntegerField()
    reputation_weight = models.DecimalField(**_WEIGHT)
    stake = BaseUnitsField()
    stake_weight = models.DecimalField(**_WEIGHT)
    rounds_traded = models.PositiveIntegerField()
    # Sum over those rounds of S* - S*_-i, in USDC base units per hour.
    marginal_surplus = models.BigIntegerField()
    score = BaseUnitsField()
    reward = BaseUnitsField()
    ledger_idempotency_key = models.CharField(max_length=200, blank=True)

    class Meta:
        db_table = "ledger_contributionscore"
        ordering = ["epoch", "-score", "user"]
        constraints = [
            models.UniqueConstraint(fields=["epoch", "user"], name="ledger_poc_score_unique_user"),
            models.CheckConstraint(
                condition=Q(score__gt=0) & Q(reward__gte=0) & Q(marginal_surplus__gte=0),
                name="ledger_poc_score_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id}: {self.score} points, {self.reward} JCT base units"
