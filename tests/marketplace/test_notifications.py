"""Notifications: rentals that start, end or fail, low escrow, nodes going offline; once per event, on the channels
each user chose; nobody sees another user's."""

import threading

import pytest
from django.core import mail
from django.db import connections, transaction

from marketplace.notifications.delivery import notification_email_deliver
from marketplace.notifications.models import Notification, NotificationPreferences
from marketplace.notifications.services import escrow_low_notify, notification_send, preferences_set
from marketplace.rentals.models import Rental, RentalState
from marketplace.rentals.services import rental_cancel
from nodes.models import Node, NodeState
from nodes.operator import node_quarantine, node_release
from nodes.services import node_transition
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import USDC, fund, report_state, run_round, submit, sync


@pytest.fixture(autouse=True)
def _reference_price(settings):
    settings.PRICING_DEFAULT_ASK = "0.50"


@pytest.fixture
def buyer(db):
    user = UserFactory()
    fund(user, 1_000 * USDC)
    return user


@pytest.fixture
def node(db):
    return online_node(UserFactory(), name="rig", vgpus=2, price=500_000)


def _kinds(user) -> list[tuple[str, str]]:
    return list(Notification.objects.filter(user=user).order_by("pk").values_list("kind", "key"))


def _running(buyer, capture) -> Rental:
    with capture(execute=True):
        rental = submit(buyer)
    with capture(execute=True):
        run_round(rental)
    with capture(execute=True):
        report_state(rental.placements.get(), "running")
        sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.RUNNING
    return rental


@pytest.mark.django_db
def test_a_rental_that_starts_and_ends_tells_its_owner_on_the_site_and_not_by_mail_by_default(
    buyer, node, celery_eager, django_capture_on_commit_callbacks
):
    rental = _running(buyer, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        report_state(rental.placements.get(), "exited", exit_code=0)
        sync()
    rental.refresh_from_db()
    assert rental.state == RentalState.COMPLETED

    assert _kinds(buyer) == [
        ("rental_started", f"rental:{rental.pk}:1:running"),
        ("rental_ended", f"rental:{rental.pk}:ended"),
    ]
    titles = list(Notification.objects.filter(user=buyer).order_by("pk").values_list("title", flat=True))
    assert titles == [f"Rental {rental.pk} is running", f"Rental {rental.pk} ended (Completed)"]  # the new state
    assert all(n.on_site and not n.email_wanted for n in Notification.objects.filter(user=buyer))
    assert mail.outbox == []  # started and ended are not e-mailed unless the user asks
    assert not Notification.objects.exclude(user=buyer).exists()  # the provider heard nothing of it


@pytest.mark.django_db
def test_a_failed_rental_is_emailed_once_even_when_the_task_runs_again(
    buyer, node, celery_eager, django_capture_on_commit_callbacks
):
    rental = _running(buyer, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        report_state(rental.placements.get(), "failed", exit_code=3, message="out of memory")
        sync()

    failed = Notification.objects.get(user=buyer, kind="rental_failed")
    assert failed.key == f"rental:{rental.pk}:failed" and failed.emailed_at is not None
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [buyer.email]
    assert f"Rental {rental.pk} failed" in mail.outbox[0].subject
    assert f"/rentals/{rental.pk}/" in mail.outbox[0].body

    assert notification_email_deliver(notification_id=failed.pk) is False  # a retried task
    assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_a_cancelled_rental_is_an_ended_one(buyer, node, django_capture_on_commit_callbacks):
    rental = submit(buyer)
    rental_cancel(owner=buyer, rental_id=rental.pk)
    assert _kinds(buyer) == [("rental_ended", f"rental:{rental.pk}:ended")]
    assert Notification.objects.get(user=buyer).title == f"Rental {rental.pk} ended (Cancelled)"


@pytest.mark.django_db
def test_a_state_change_rolled_back_tells_nobody(buyer, node, celery_eager, django_capture_on_commit_callbacks):
    rental = submit(buyer)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            rental_cancel(owner=buyer, rental_id=rental.pk)
            raise RuntimeError("the caller's transaction fails after the transition")
    assert _kinds(buyer) == [] and mail.outbox == []
    assert Rental.objects.get(pk=rental.pk).state == RentalState.PENDING


@pytest.mark.django_db
def test_a_node_going_offline_or_quarantined_tells_its_provider_but_a_release_does_not(
    node, celery_eager, django_capture_on_commit_callbacks
):
    provider = node.owner
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        node_transition(
            node=Node.objects.select_for_update().get(pk=node.pk), to_state="offline", reason="No heartbeat"
        )
    with django_capture_on_commit_callbacks(execute=True):
        node_quarantine(node_id=node.pk, reason="forged usage")
        node_release(node_id=node.pk, reason="cleared")

    notes = list(Notification.objects.filter(user=provider).order_by("pk"))
    assert [n.title for n in notes] == ["Node rig went offline", "Node rig was quarantined"]
    assert "No heartbeat" in notes[0].body and notes[0].url == "/nodes/"
    assert len(mail.outbox) == 2  # node_offline is e-mailed by default
    assert Node.objects.get(pk=node.pk).state == NodeState.OFFLINE


@pytest.mark.django_db
def test_low_escrow_is_told_once_per_rental_and_only_for_running_rentals(
    buyer, node, settings, celery_eager, django_capture_on_commit_callbacks
):
    settings.NOTIFICATIONS_ESCROW_LOW_PERCENT = 10
    rental = _running(buyer, django_capture_on_commit_callbacks)
    committed = rental.held_total - rental.refunded
    Rental.objects.filter(pk=rental.pk).update(escrow_held=committed // 10)  # exactly 10 %: not yet low
    assert escrow_low_notify() == 0

    Rental.objects.filter(pk=rental.pk).update(escrow_held=committed // 10 - 1)
    pending = submit(buyer)  # not running: never low
    Rental.objects.filter(pk=pending.pk).update(escrow_held=0)
    with django_capture_on_commit_callbacks(execute=True):
        assert escrow_low_notify() == 1
        assert escrow_low_notify() == 0  # a second scan: already told
    assert _kinds(buyer)[-1] == ("escrow_low", f"rental:{rental.pk}:escrow_low")
    assert len(mail.outbox) == 1 and "escrow" in mail.outbox[0].subject


@pytest.mark.django_db
def test_preferences_choose_the_channels(buyer, node, celery_eager, django_capture_on_commit_callbacks):
    preferences_set(user=buyer, site_kinds=[], email_kinds=["rental_ended"])
    with django_capture_on_commit_callbacks(execute=True):
        rental_cancel(owner=buyer, rental_id=submit(buyer).pk)
    note = Notification.objects.get(user=buyer)
    assert (note.on_site, note.email_wanted) == (False, True) and len(mail.outbox) == 1

    preferences_set(user=buyer, site_kinds=[], email_kinds=[])
    with django_capture_on_commit_callbacks(execute=True):
        rental_cancel(owner=buyer, rental_id=submit(buyer).pk)
    assert Notification.objects.filter(user=buyer).count() == 1 and len(mail.outbox) == 1


@pytest.mark.django_db
def test_the_profile_form_saves_preferences_and_refuses_unknown_kinds(client, buyer):
    client.force_login(buyer)
    page = client.get("/settings/profile/").content.decode()
    assert 'id="notifications-form"' in page and "under 10 %" in page

    response = client.post(
        "/settings/notifications/",
        {"notify-site_kinds": ["rental_failed", "node_offline"], "notify-email_kinds": ["escrow_low"]},
    )
    assert response.status_code == 302
    prefs = NotificationPreferences.objects.get(user=buyer)
    assert (prefs.site_kinds, prefs.email_kinds) == (["node_offline", "rental_failed"], ["escrow_low"])

    response = client.post("/settings/notifications/", {"notify-site_kinds": ["everything"]}, follow=True)
    assert "Choose only the listed kinds" in response.content.decode()
    prefs.refresh_from_db()
    assert prefs.site_kinds == ["node_offline", "rental_failed"]  # nothing half-saved


@pytest.mark.django_db
def test_a_user_sees_only_their_own_notifications(client, buyer):
    other = UserFactory()
    mine = notification_send(user_id=buyer.pk, kind="rental_ended", key="k:1", title="Mine ended", url="/rentals/")
    theirs = notification_send(user_id=other.pk, kind="rental_ended", key="k:1", title="Theirs ended")
    client.force_login(buyer)

    page = client.get("/notifications/").content.decode()
    assert "Mine ended" in page and "Theirs ended" not in page
    assert client.get(f"/notifications/{theirs}/").status_code == 404
    assert Notification.objects.get(pk=theirs).read_at is None  # looking did not mark it read

    assert 'id="notifications-unread">1<' in client.get("/notifications/bell/").content.decode()
    assert client.get(f"/notifications/{mine}/").status_code == 200
    assert "notifications-unread" not in client.get("/notifications/bell/").content.decode()

    notification_send(user_id=buyer.pk, kind="rental_ended", key="k:2", title="Second")
    client.post("/notifications/read/")
    assert not Notification.objects.filter(user=buyer, read_at__isnull=True).exists()
    assert Notification.objects.get(pk=theirs).read_at is None  # "read all" is mine only

    assert client.get("/notifications/99999999999999999999999/").status_code == 404  # past bigint: not a 500

    client.logout()
    assert client.get("/notifications/").status_code == 302  # to the sign-in page
    assert client.get(f"/notifications/{mine}/").status_code == 302


@pytest.mark.django_db
def test_unknown_page_numbers_do_not_break_the_list(client, buyer):
    client.force_login(buyer)
    for page in ("0", "-1", "x" * 500, "99999999999999999999"):
        assert client.get("/notifications/", {"page": page}).status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("requires_postgresql")
def test_two_workers_telling_the_same_event_record_and_mail_it_once(celery_eager):
    user = UserFactory()
    barrier = threading.Barrier(2)
    outcomes: list = []

    def worker() -> None:
        try:
            with transaction.atomic():
                barrier.wait()
                outcomes.append(
                    notification_send(user_id=user.pk, kind="node_offline", key="node:7:event:9", title="Node down")
                )
                # Hold the row a moment so the other insert waits on the unique index, then fails.
                connections["default"].cursor().execute("SELECT pg_sleep(0.3)")
        except Exception as exc:  # collected for the assertion
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes, key=lambda o: o is None) == [Notification.objects.get().pk, None]
    assert len(mail.outbox) == 1  # only the worker that recorded it queued the e-mail


@pytest.mark.django_db
def test_a_flood_of_preference_values_is_refused_whole(client, buyer):
    client.force_login(buyer)
    flood = client.post("/settings/notifications/", {"notify-site_kinds": ["rental_failed"] * 5000})
    assert flood.status_code == 400  # past Django's field limit: refused before any code of ours runs
    response = client.post(
        "/settings/notifications/", {"notify-site_kinds": ["rental_failed"] * 500 + ["x" * 10_000]}, follow=True
    )
    assert response.status_code == 200 and "Choose only the listed kinds" in response.content.decode()
    assert not NotificationPreferences.objects.filter(user=buyer).exists()
    client.post("/settings/notifications/", {"notify-site_kinds": ["rental_failed"] * 500})
    assert NotificationPreferences.objects.get(user=buyer).site_kinds == ["rental_failed"]  # duplicates folded


@pytest.mark.django_db(transaction=True)
def test_an_email_the_broker_never_took_is_queued_again_and_sent_once(buyer, celery_eager, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from marketplace.notifications import services

    tried = []

    def broker_down(notification_id):
        tried.append(notification_id)
        raise ConnectionError("redis is down")

    monkeypatch.setattr(services.notification_email_send, "delay", broker_down)
    with transaction.atomic():
        first = notification_send(user_id=buyer.pk, kind="rental_failed", key="r:9:failed", title="Rental 9 failed")
    # The commit went through although the e-mail could not be queued (robust on_commit).
    assert tried == [first]
    assert Notification.objects.get(pk=first).emailed_at is None and mail.outbox == []
    monkeypatch.undo()

    assert services.notification_emails_requeue() == 0  # too fresh: its own task may still be on the way
    Notification.objects.filter(pk=first).update(created_at=timezone.now() - timedelta(minutes=10))
    assert services.notification_emails_requeue() == 1
    assert services.notification_emails_requeue() == 0
    assert len(mail.outbox) == 1 and Notification.objects.get(pk=first).emailed_at is not None
