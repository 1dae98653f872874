"""Contributions under real concurrency on PostgreSQL: one counter, one copy of a text, one epoch payment."""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from contributions.models import Content, DataReward, Record
from contributions.review import contribution_review_run
from ledger.models import Entry
from reputation.contribution import contribution_epoch_close, epoch_bounds
from tests.contributions.conftest import pair, record
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.usefixtures("requires_postgresql"),
    pytest.mark.django_db(transaction=True),
]
THREADS = 6


def race(calls):
    """Run each call on its own thread at once; return their results (or exceptions)."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait()
            results[index] = call()
        except Exception as error:  # the caller inspects every outcome
            results[index] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_one_counter_is_accepted_once_and_one_text_is_stored_once():
    extensions = [pair(UserFactory()) for _ in range(THREADS)]
    same_counter = pair(UserFactory())
    bodies = [same_counter.body([record(f"distinct query number {i}")], counter=1) for i in range(THREADS)]

    statuses = race([lambda body=body: same_counter.post(body).status_code for body in bodies])
    assert sorted(statuses) == [201] + [409] * (THREADS - 1)

    shared = race([lambda ext=ext: ext.upload([record("the very same search query")]).json() for ext in extensions])
    stored = [item for answer in shared for item in answer["items"] if item["status"] == "pending"]
    assert len(stored) == 1
    assert Record.objects.exclude(user=same_counter.user).count() == 1 and Content.objects.count() == 2


def test_closing_an_epoch_from_many_workers_pays_data_contributors_once(settings):
    settings.POC_EPOCH_SECONDS = 3600
    settings.POC_EMISSION_JCT = "1000"
    settings.POC_DATA_SHARE = "0.1"
    start, _ = epoch_bounds(moment=timezone.now() - timedelta(hours=1))
    ext = pair(UserFactory())
    ext.upload([record("what is the capital of portugal")])
    contribution_review_run()
    Record.objects.update(accepted_at=start + timedelta(minutes=1))

    epochs = race([lambda: contribution_epoch_close(start=start).pk for _ in range(THREADS)])
    assert len(set(epochs)) == 1, epochs
    assert DataReward.objects.count() == 1
    assert Entry.objects.filter(account__owner=ext.user).count() == 1
