"""Review: MinHash near-duplicates at a named threshold, automatic decisions, operators, deletion and exports."""

import io
import json

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from contributions import minhash
from contributions.models import Content, MinHashBand, Record
from contributions.review import contribution_review_run, record_review
from contributions.selectors import export_lines
from tests.contributions.conftest import record
from tests.factories import UserFactory


def test_minhash_estimates_jaccard_and_flags_near_duplicates_at_the_named_threshold():
    base = "how do i configure nginx as a reverse proxy for a django application"
    near = "how do i configure nginx as a reverse proxy for my django application"
    far = "cheap flights from berlin to lisbon in march"
    assert minhash.NEAR_DUPLICATE_JACCARD == 0.8
    assert minhash.jaccard(base, near) >= 0.8
    assert (
        abs(minhash.similarity(minhash.signature(base), minhash.signature(near)) - minhash.jaccard(base, near)) < 0.15
    )
    assert minhash.similarity(minhash.signature(base), minhash.signature(far)) < 0.2
    # Case and spacing do not hide a duplicate; near-duplicates share at least one LSH band.
    assert minhash.signature(base) == minhash.signature(
        "  HOW do I configure nginx as a reverse proxy for a DJANGO application "
    )
    assert set(minhash.bands(minhash.signature(base))) & set(minhash.bands(minhash.signature(near)))


def _decide(ext, content, **extra):
    item = ext.upload([record(content, **extra)]).json()["items"][0]
    contribution_review_run()
    return Record.objects.get(pk=item["id"])


@pytest.mark.parametrize(
    ("content", "status", "reason"),
    [
        ("what is the capital of portugal", "accepted", ""),
        ("ab", "rejected", "shorter than 3 characters"),
        ("42 ++ 17 == 59 ?!", "rejected", "not natural language"),
        ("как приготовить борщ", "pending", "Cyrillic script"),
    ],
)
def test_automatic_checks_decide_where_certain_and_leave_the_rest_to_an_operator(ext, content, status, reason):
    decided = _decide(ext, content)
    assert decided.status == status and reason in decided.reason
    assert decided.auto_reviewed_at is not None and decided.checks["length"] > 0
    assert (decided.accepted_at is not None) == (status == "accepted")


def test_a_near_duplicate_of_your_own_record_is_rejected_of_someone_elses_goes_to_an_operator(ext, other_ext):
    original = _decide(ext, "how do i configure nginx as a reverse proxy for a django application")
    mine = _decide(ext, "how do i configure nginx as a reverse proxy for my django application")
    theirs = _decide(other_ext, "how do i configure nginx as a reverse proxy for the django application")

    assert original.status == "accepted"
    assert mine.status == "rejected" and f"near-duplicate of your record #{original.pk}" in mine.reason
    assert theirs.status == "pending" and "another contributor" in theirs.reason


def test_records_quoting_others_wait_for_an_operator_who_accepts_in_the_admin(ext, admin_client):
    quoted = _decide(ext, "an insightful thread someone posted", kind="social_post")
    assert quoted.status == "pending" and "quotes other people" in quoted.reason
    contribution_review_run()  # checked once: not re-checked
    response = admin_client.post(
        "/admin/contributions/record/", {"action": "accept", "_selected_action": [quoted.pk]}, follow=True
    )
    assert response.status_code == 200
    quoted.refresh_from_db()
    assert quoted.status == "accepted" and quoted.accepted_at is not None
    assert b"an insightful thread" in admin_client.get(f"/admin/contributions/record/{quoted.pk}/change/").content


def test_an_operator_rejection_keeps_a_reason_and_decided_records_stay_decided(ext):
    pending = _decide(ext, "ещё один вопрос")
    assert record_review(record_id=pending.pk, accept=False).reason == "rejected by an operator"
    assert record_review(record_id=pending.pk, accept=True).status == "rejected"


def test_a_contributor_sees_states_and_deletes_content_but_the_hash_stays(ext, other_ext):
    kept = _decide(ext, "what is the capital of portugal")
    gone = _decide(ext, "what is the capital of spain")
    client = APIClient()
    client.force_authenticate(ext.user)
    listed = {row["id"]: row["status"] for row in client.get("/api/v1/contributions/records/").json()["results"]}
    assert listed == {kept.pk: "accepted", gone.pk: "accepted"}

    stranger = APIClient()
    stranger.force_authenticate(other_ext.user)
    assert stranger.delete(f"/api/v1/contributions/records/{gone.pk}/").status_code == 404
    assert client.delete(f"/api/v1/contributions/records/{gone.pk}/").status_code == 204

    gone.refresh_from_db()
    assert gone.status == "deleted" and gone.sha256 and gone.metadata == {}
    assert not Content.objects.filter(sha256=gone.sha256).exists()
    assert not MinHashBand.objects.filter(record=gone).exists()
    # The same content uploaded again is still a duplicate: its hash stays, so it earns nothing twice.
    assert ext.upload([record("what is the capital of spain")]).json()["items"][0]["status"] == "duplicate"
    exported = [json.loads(line) for line in export_lines(kind="search_query")]
    assert [row["sha256"] for row in exported] == [kept.sha256]


def test_export_is_json_lines_of_accepted_records_with_hashes_never_deleted_or_quoting_others(ext, settings):
    accepted = _decide(ext, "what is the capital of portugal")
    _decide(ext, "ab")  # rejected
    social = _decide(ext, "a thread by someone else", kind="social_post")
    record_review(record_id=social.pk, accept=True)
    out, err = io.StringIO(), io.StringIO()
    call_command("contributions_export", kind="search_query", stdout=out, stderr=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == [
        {
            "sha256": accepted.sha256,
            "kind": "search_query",
            "source": "duckduckgo",
            "content": "what is the capital of portugal",
            "captured_at": accepted.captured_at.isoformat(),
            "accepted_at": accepted.accepted_at.isoformat(),
            "consent_terms_version": "2026-12-01",
            "language_script": "Latin",
        }
    ]
    out = io.StringIO()
    call_command("contributions_export", kind="social_post", stdout=out, stderr=err)
    assert out.getvalue() == ""
    settings.CONTRIBUTIONS_TERMS_ALLOW_QUOTES = True
    assert len(list(export_lines(kind="social_post"))) == 1


def test_the_site_lists_each_record_state_and_deletes(ext, client):
    kept = _decide(ext, "what is the capital of portugal")
    client.force_login(ext.user)
    page = client.get("/contributions/").content.decode()
    assert f'data-record="{kept.pk}"' in page and "accepted" in page
    client.post(f"/contributions/records/{kept.pk}/delete/")
    kept.refresh_from_db()
    assert kept.status == "deleted"
    client.force_login(UserFactory())
    assert "No records yet." in client.get("/contributions/").content.decode()
