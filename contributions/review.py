"""Review of contributed records: automatic checks, then accept / reject where certain, else an operator decides.

Checks, in order (the first certain outcome wins):
1. private data: the redaction patterns again (they may have grown since the upload) -> reject;
2. length: fewer than CONTRIBUTIONS_MIN_CHARS non-space characters -> reject;
3. language: under half the characters letters (numbers, symbols, encoded blobs) -> reject; letters mostly in
   a Unicode script outside CONTRIBUTIONS_AUTO_SCRIPTS -> operator (no language model here, see the docs);
4. near-duplicates (MinHash over 5-character shingles, contributions.minhash.NEAR_DUPLICATE_JACCARD):
   of the same contributor's record -> reject; of another contributor's -> operator;
5. quotes other people -> operator;
otherwise accept.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from contributions import minhash, redaction
from contributions.errors import RecordNotFound
from contributions.models import Content, MinHashBand, Record

ACCEPT, REJECT, OPERATOR = "accept", "reject", "operator"
MIN_LETTER_RATIO = 0.5
MAX_CANDIDATES = 50


@dataclass(frozen=True)
class Verdict:
    decision: str
    reason: str
    checks: dict


def dominant_script(text: str) -> str | None:
    """Return the Unicode script (first word of the character names) most letters of ``text`` belong to."""
    scripts = Counter()
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            scripts[name.split(" ")[0].title() if name else "Unknown"] += 1
    return scripts.most_common(1)[0][0] if scripts else None


def nearest(record: Record) -> tuple[Record | None, float]:
    """Return the most similar other stored record sharing an LSH band with ``record``, and the estimated Jaccard."""
    if not record.minhash:
        return None, 0.0
    same_band = Q()
    for band, value in enumerate(minhash.bands(record.minhash)):
        same_band |= Q(band=band, value=value)
    ids = (
        MinHashBand.objects.filter(same_band)
        .exclude(record_id=record.pk)
        .values_list("record_id", flat=True)
        .distinct()[:MAX_CANDIDATES]
    )
    best, best_score = None, 0.0
    for other in Record.objects.filter(pk__in=list(ids)).exclude(status=Record.Status.DELETED).order_by("pk"):
        score = minhash.similarity(record.minhash, other.minhash)
        if score > best_score:
            best, best_score = other, score
    return best, best_score


def record_check(record: Record, text: str) -> Verdict:
    """Run the automatic checks on one record and its text."""
    checks: dict = {}
    left = redaction.findings(text)
    checks["private_data"] = left
    if left:
        return Verdict(REJECT, f"still holds private data ({', '.join(left)})", checks)
    letters = sum(char.isalpha() for char in text)
    visible = sum(not char.isspace() for char in text)
    checks["length"] = visible
    if visible < settings.CONTRIBUTIONS_MIN_CHARS:
        return Verdict(REJECT, f"shorter than {settings.CONTRIBUTIONS_MIN_CHARS} characters", checks)
    ratio = letters / visible
    checks["letter_ratio"] = round(ratio, 3)
    if ratio < MIN_LETTER_RATIO:
        return Verdict(REJECT, "not natural language (mostly digits or symbols)", checks)
    script = dominant_script(text)
    checks["script"] = script
    other, similarity = nearest(record)
    checks["near_duplicate"] = {"record": other.pk if other else None, "jaccard": round(similarity, 3)}
    if other is not None and similarity >= minhash.NEAR_DUPLICATE_JACCARD:
        if other.user_id == record.user_id:
            return Verdict(REJECT, f"near-duplicate of your record #{other.pk} (Jaccard ~{similarity:.2f})", checks)
        return Verdict(OPERATOR, f"near-duplicate of another contributor's record (Jaccard ~{similarity:.2f})", checks)
    allowed = {name.strip() for name in settings.CONTRIBUTIONS_AUTO_SCRIPTS.split(",") if name.strip()}
    if script not in allowed:
        return Verdict(OPERATOR, f"written in the {script} script, which an operator reviews", checks)
    if record.quotes_others:
        return Verdict(OPERATOR, "quotes other people", checks)
    return Verdict(ACCEPT, "", checks)


def _decide(record: Record, *, accept: bool, reason: str, checks: dict | None = None) -> None:
    now = timezone.now()
    record.status = Record.Status.ACCEPTED if accept else Record.Status.REJECTED
    record.reason = reason[:300]
    record.reviewed_at = now
    record.accepted_at = now if accept else None
    fields = ["status", "reason", "reviewed_at", "accepted_at"]
    if checks is not None:
        record.checks = checks
        record.auto_reviewed_at = now
        fields += ["checks", "auto_reviewed_at"]
    record.save(update_fields=fields)


def contribution_review_run(*, limit: int = 500) -> dict[str, int]:
    """Check up to ``limit`` pending records not checked yet, oldest first; return the count per decision."""
    counts = {ACCEPT: 0, REJECT: 0, OPERATOR: 0}
    ids = list(
        Record.objects.filter(status=Record.Status.PENDING, auto_reviewed_at__isnull=True)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    for record_id in ids:
        with transaction.atomic():
            record = (
                Record.objects.select_for_update()
                .filter(pk=record_id, status=Record.Status.PENDING, auto_reviewed_at__isnull=True)
                .first()
            )
            if record is None:
                continue  # deleted or decided meanwhile
            text = Content.objects.filter(sha256=record.sha256).values_list("text", flat=True).first() or ""
            verdict = record_check(record, text)
            counts[verdict.decision] += 1
            if verdict.decision == OPERATOR:
                record.checks = verdict.checks
                record.reason = f"waiting for an operator: {verdict.reason}"[:300]
                record.auto_reviewed_at = timezone.now()
                record.save(update_fields=["checks", "reason", "auto_reviewed_at"])
            else:
                _decide(record, accept=verdict.decision == ACCEPT, reason=verdict.reason, checks=verdict.checks)
    return counts


def record_review(*, record_id: int, accept: bool, reason: str = "") -> Record:
    """An operator's decision on a pending record (deleted and decided records are left as they are)."""
    with transaction.atomic():
        record = Record.objects.select_for_update().filter(pk=record_id).first()
        if record is None:
            raise RecordNotFound("No such record.", detail={"record_id": record_id})
        if record.status == Record.Status.PENDING:
            _decide(record, accept=accept, reason=reason or ("" if accept else "rejected by an operator"))
        return record
