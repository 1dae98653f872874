"""Reputation records: Proof of Contribution epochs and scores; evidence, scores, alerts and challenges.

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


class SubjectKind(models.TextChoices):
    NODE = "node", "Provider node"
    PROVIDER = "provider", "Provider"
    BUYER = "buyer", "Buyer"


class EvidenceKind(models.TextChoices):
    UPTIME = "uptime", "Uptime of a day"
    PLACEMENT_COMPLETED = "placement_completed", "Placement completed"
    PLACEMENT_FAILED = "placement_failed", "Placement failed (the workload's own failure)"
    PLACEMENT_LOST = "placement_lost", "Placement lost by the provider"
    CHALLENGE_PASSED = "challenge_passed", "Verification challenge passed"
    CHALLENGE_FAILED = "challenge_failed", "Verification challenge failed"
    DISPUTE_UPHELD = "dispute_upheld", "Dispute upheld"
    DISPUTE_REJECTED = "dispute_rejected", "Dispute rejected"
    SYBIL_GPU_UUID = "sybil_gpu_uuid", "GPU UUID claimed by a second node"
    USAGE_REFUSED = "usage_refused", "Usage the platform's records contradict"
    TELEMETRY_CONTRADICTION = "telemetry_contradiction", "Telemetry contradicting the claimed GPU"
    MANY_BUYERS_FAILED = "many_buyers_failed", "Placements failing for many buyers"
    OWNER_INTERRUPTION = "owner_interruption", "Interruptible placement interrupted by the node's owner"
    DEDICATED_OWNER_USE = "dedicated_owner_use", "Dedicated node's GPU taken by its owner"
    CORRECTION = "correction", "Correction by an operator"
    STAKE_SLASHED = "stake_slashed", "Stake slashed by an operator after an upheld dispute"


class Evidence(models.Model):
    """One signal about a subject, never edited or deleted: a correction is a new row pointing at the old one.

    Amounts are micro-units of good (`positive`) and bad (`negative`) evidence. Evidence about a node also
    counts for its provider (`user` is the node's owner). `day` is the UTC day it was recorded: the day the
    score counts it on. `source_key` makes recording idempotent (a signal and the collector may both see it).
    Evidence from dealing with oneself is stored with `self_dealing` and zero amounts: it counts for nothing.
    """

    subject_kind = models.CharField(max_length=10, choices=SubjectKind.choices)
    node = models.ForeignKey("nodes.Node", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=32, choices=EvidenceKind.choices)
    positive = models.BigIntegerField(default=0)
    negative = models.BigIntegerField(default=0)
    day = models.DateField(db_index=True)
    at = models.DateTimeField(help_text="When the event happened.")
    recorded_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=40)
    source_key = models.CharField(max_length=160, unique=True)
    detail = models.CharField(max_length=300, blank=True)
    self_dealing = models.BooleanField(default=False)
    corrects = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="corrections")

    class Meta:
        ordering = ["-day", "-pk"]
        indexes = [
            models.Index(fields=["node", "day"], name="reputation_ev_node_day"),
            models.Index(fields=["user", "subject_kind", "day"], name="reputation_ev_user_day"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(positive__gte=0) & Q(negative__gte=0), name="reputation_evidence_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(subject_kind="node", node__isnull=False) | ~Q(subject_kind="node"),
                name="reputation_evidence_node_subject",
            ),
            models.CheckConstraint(
                condition=Q(self_dealing=False) | Q(positive=0, negative=0),
                name="reputation_self_dealing_counts_nothing",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} about {self.subject_kind} {self.node_id or self.user_id} on {self.day}"


class SubjectScore(models.Model):
    """The folded Beta state of one subject through `through_day` (reputation.beta.State)."""

    subject_kind = models.CharField(max_length=10, choices=SubjectKind.choices)
    subject_id = models.BigIntegerField()
    alpha = models.BigIntegerField(default=0)
    beta = models.BigIntegerField(default=0)
    through_day = models.DateField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject_kind", "subject_id"], name="reputation_score_unique_subject")
        ]

    def __str__(self) -> str:
        return f"{self.subject_kind} {self.subject_id} through {self.through_day}"


class ScoreFold(models.Model):
    """A UTC day whose evidence is folded into every SubjectScore: written in the fold's own transaction."""

    day = models.DateField(unique=True)
    evidence_rows = models.PositiveIntegerField()
    subjects = models.PositiveIntegerField()
    folded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"fold of {self.day}"


class AccountLink(models.Model):
    """Two accounts an operator found to be one person: evidence from trading between them counts for nothing."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    other = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "other"], name="reputation_link_unique"),
            models.CheckConstraint(condition=Q(user__lt=models.F("other")), name="reputation_link_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} = {self.other_id}"


class Alert(models.Model):
    """An abuse finding for operators, with the evidence it produced."""

    evidence = models.OneToOneField(Evidence, on_delete=models.PROTECT, related_name="alert")
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.message[:80]


class ChallengeState(models.TextChoices):
    SENT = "sent", "Sent"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class Challenge(models.Model):
    """A verification challenge: an ordinary-looking placement whose answer the platform knows (challenge_math)."""

    node = models.ForeignKey("nodes.Node", on_delete=models.PROTECT, related_name="+")
    placement_id = models.CharField(max_length=128, unique=True)
    vgpu_local_id = models.CharField(max_length=40)
    seed = models.BigIntegerField()
    size = models.PositiveIntegerField()
    expected = models.PositiveIntegerField()
    state = models.CharField(max_length=8, choices=ChallengeState.choices, default=ChallengeState.SENT, db_index=True)
    reason = models.CharField(max_length=300, blank=True)
    gpu_seen = models.CharField(max_length=200, blank=True)
    on_cpu = models.BooleanField(default=False, help_text="A fake-GPU node: the same path, computed on the CPU.")
    created_at = models.DateTimeField(auto_now_add=True)
    deadline = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"challenge {self.placement_id} ({self.state})"
