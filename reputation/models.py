"""Reputation: append-only evidence about nodes, providers and buyers, the folded scores, and operator alerts."""

from django.conf import settings
from django.db import models
from django.db.models import Q


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
    CORRECTION = "correction", "Correction by an operator"


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
