"""The challenge schedule (Celery beat `reputation.challenges_schedule`): who is challenged, when, and only once."""

import itertools
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings as django_settings
from django.db import connections

from janction.settings.schedule import CELERY_BEAT_SCHEDULE
from nodes.models import NodeCommand, NodeState
from nodes.services import Holder, node_quarantine, node_transition, vgpus_reserve
from reputation.challenges import challenge_due, challenge_period_and_window, challenges_schedule
from reputation.models import Challenge
from reputation.tasks import challenges_schedule_task
from tests.factories import UserFactory, online_node


def test_beat_runs_the_schedule_at_its_setting():
    entry = CELERY_BEAT_SCHEDULE["reputation-challenges"]
    assert entry == {
        "task": "reputation.challenges_schedule",
        "schedule": django_settings.REPUTATION_CHALLENGE_SCHEDULE_SECONDS,
    }


def test_over_a_day_each_node_is_due_at_the_rate_and_the_nodes_are_spread_over_the_ticks(settings):
    settings.REPUTATION_CHALLENGES_PER_NODE_PER_DAY = 4
    settings.REPUTATION_CHALLENGE_SCHEDULE_SECONDS = 300
    period, window = challenge_period_and_window()
    assert (period, window) == (21_600, 600)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    last: dict[int, datetime | None] = dict.fromkeys(range(1, 201))
    times: dict[int, list[datetime]] = {node: [] for node in last}
    per_tick = []
    for tick in range(2 * 86_400 // 300):
        now = start + timedelta(seconds=300 * tick)
        due = [
            n for n in last if challenge_due(node_id=n, now=now, last_issued_at=last[n], period=period, window=window)
        ]
        for node in due:
            last[node] = now
            times[node].append(now)
        per_tick.append(len(due))
    day_two = start + timedelta(days=1)
    for node, issued in times.items():
        assert {later - earlier for earlier, later in itertools.pairwise(issued[1:])} == {timedelta(hours=6)}
        assert sum(day_two <= at < day_two + timedelta(days=1) for at in issued) == 4, node  # exactly the rate
    assert max(per_tick) <= 12  # 200 nodes: about 2.8 per tick, never a crowd
    assert sum(1 for count in per_tick[:72] if count) >= 60  # spread over most of the 72 ticks of a period


@pytest.fixture
def every_node_due(settings):
    """One challenge a day, due all day long: every node is due once until it was challenged today."""
    settings.REPUTATION_CHALLENGES_PER_NODE_PER_DAY = 1
    settings.REPUTATION_CHALLENGE_SCHEDULE_SECONDS = 86_400


@pytest.mark.django_db
def test_online_nodes_with_a_free_vgpu_are_challenged_once_and_busy_offline_or_quarantined_ones_are_not(
    every_node_due, settings
):
    free = online_node(UserFactory(), name="free", vgpus=2)
    half_busy = online_node(UserFactory(), name="half", vgpus=2)
    vgpus_reserve(vgpus=list(half_busy.vgpus.filter(local_id="0:0")), holder=Holder.placement("rental-1-1-1"))
    busy = online_node(UserFactory(), name="busy", vgpus=2)
    vgpus_reserve(vgpus=list(busy.vgpus.all()), holder=Holder.placement("rental-2-2-2"))
    offline = online_node(UserFactory(), name="offline", vgpus=1)
    node_transition(node=offline, to_state=NodeState.OFFLINE, reason="test")
    quarantined = online_node(UserFactory(), name="bad", vgpus=1)
    node_quarantine(node_id=quarantined.pk, reason="test")

    sent = challenges_schedule()
    assert sorted(c.node_id for c in sent) == [free.pk, half_busy.pk]
    assert Challenge.objects.get(node=half_busy).vgpu_local_id == "0:1"  # the free one
    assert challenges_schedule() == []  # idempotent: a challenge is already sent in this slot
    Challenge.objects.update(state="passed")
    assert challenges_schedule() == []  # answered, but the node had its turn today
    settings.REPUTATION_CHALLENGES_PER_NODE_PER_DAY = 0
    Challenge.objects.all().delete()
    assert challenges_schedule() == []  # 0 turns the schedule off


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_each_node_one_challenge(every_node_due):
    nodes = [online_node(UserFactory(), name=f"rig{i}", vgpus=2) for i in range(6)]
    barrier, results = threading.Barrier(2), []

    def worker():
        try:
            barrier.wait()
            results.append(challenges_schedule_task())
        except Exception as exc:
            results.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(isinstance(result, list) for result in results), results
    assert sorted(results[0] + results[1]) == sorted(node.pk for node in nodes)
    assert Counter(Challenge.objects.values_list("node_id", flat=True)) == {node.pk: 1 for node in nodes}
    assert NodeCommand.objects.count() == len(nodes)
