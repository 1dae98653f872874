"""Data contributions: paired devices, records (content-addressed by SHA-256), their review and rewards."""

from django.conf import settings
from django.db import models

from ledger.fields import BaseUnitsField


class Device(models.Model):
    """A browser extension's key pair, approved by its user on the site; revoked devices can no longer upload."""

    class Algorithm(models.TextChoices):
        ED25519 = "Ed25519", "Ed25519"
        P256 = "ECDSA-P256", "ECDSA P-256"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="contribution_devices")
    name = models.CharField(max_length=80)
    algorithm = models.CharField(max_length=16, choices=Algorithm.choices)
    public_key = models.BinaryField(max_length=65, unique=True)
    fingerprint = models.CharField(max_length=19)
    # The largest upload counter accepted from this device: the next batch must carry a larger one.
    last_counter = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(last_counter__gte=0), name="device_counter_nonneg")]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


class Record(models.Model):
    """One contributed record. Its SHA-256 is unique across all users: a duplicate is never stored again."""

    class Kind(models.TextChoices):
        SEARCH_QUERY = "search_query", "Search query"
        CHATBOT_PROMPT = "chatbot_prompt", "Chatbot question"
        SOCIAL_POST = "social_post", "Social post"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending review"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"
        DELETED = "deleted", "Deleted by its contributor"

    sha256 = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="contributions")
    device = models.ForeignKey(Device, on_delete=models.PROTECT, related_name="records")
    upload_counter = models.BigIntegerField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    source = models.CharField(max_length=40)
    size = models.PositiveIntegerField()
    captured_at = models.DateTimeField()
    metadata = models.JSONField(default=dict, blank=True)
    quotes_others = models.BooleanField(default=False, help_text="Quotes other people: never exported.")
    consent_terms_version = models.CharField(max_length=32)
    consent_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.CharField(max_length=300, blank=True)
    checks = models.JSONField(default=dict, blank=True)
    minhash = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    auto_reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    accepted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    # The settlement batch whose DA copy commits to this record (set when the batch is prepared).
    da_batch_seq = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    # The linked wallet (EIP-55) that co-signed the upload with EIP-191; blank when the upload was not co-signed.
    cosigner = models.CharField(max_length=42, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["device", "created_at"]), models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.sha256[:12]} ({self.status})"


class Content(models.Model):
    """The stored text of a record, addressed by its SHA-256; deleting a record deletes this row."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    text = models.TextField()

    def __str__(self) -> str:
        return self.sha256


class MinHashBand(models.Model):
    """One LSH band hash of a record's MinHash signature: equal band hashes make near-duplicate candidates."""

    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="bands")
    band = models.PositiveSmallIntegerField()
    value = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["band", "value"])]

    def __str__(self) -> str:
        return f"band {self.band} of record {self.record_id}"


class DataReward(models.Model):
    """What one contributor's accepted records earned in one Proof-of-Contribution epoch."""

    epoch_start = models.DateTimeField()
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="data_rewards")
    records_counted = models.PositiveIntegerField()
    reward = BaseUnitsField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["epoch_start", "user"], name="data_reward_once_per_epoch")]

    def __str__(self) -> str:
        return f"{self.user_id} @ {self.epoch_start:%Y-%m-%d %H:%M}: {self.reward}"
