"""Reports: the monthly statement's PDF holds the page's lines and totals; every report chart equals its aggregate."""

import html
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum
from pypdf import PdfReader

from ledger.models import AccountKind, Entry, SettlementAlert
from ledger.services import ledger_deposit
from marketplace import report_views
from marketplace.periods import Month, current_month
from marketplace.rentals.metering import metering_run
from marketplace.report_selectors import (
    daily_amount_chart,
    earnings_per_day,
    month_clearing_prices,
    online_vgpu_ms,
    platform_per_day,
    pool_reports,
    provider_utilisation,
    round_price_chart,
    round_summaries,
    sold_vgpu_ms,
    statement_totals,
    utilisation_chart,
)
from nodes.models import Node, NodeEvent, NodeState
from pricing.models import Bid, MarketRound
from reputation.collect import uptime_fraction
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import report_state, report_usage, run_round, submit, sync

pytestmark = pytest.mark.django_db

HOUR = 3_600_000
ROW = r'<tr><td>(\d{4}-[^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td class="num">([^<]*)</td>'


def _previous_month() -> Month:
    now = current_month()
    return Month(now.year - 1, 12) if now.number == 1 else Month(now.year, now.number - 1)


def _at(month: Month, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(month.year, month.number, day, hour, minute, tzinfo=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _chart(page: str, element_id: str) -> dict:
    match = re.search(rf'<script id="{re.escape(element_id)}" type="application/json">(.*?)</script>', page, re.S)
    assert match, f"no chart data {element_id} on the page"
    return json.loads(match.group(1))


# --- The monthly statement as PDF ----------------------------------------------------------------------------------


@pytest.fixture
def month_user(db):
    """A user with 3 entries before the month, 30 in it (two pages on the site) and 2 after it."""
    month = _previous_month()
    user = UserFactory()

    def deposit(key: str, amount: int, when: datetime, memo: str) -> None:
        ledger_deposit(user_id=user.pk, currency="USDC", amount=amount, idempotency_key=key, memo=memo)
        Entry.objects.filter(transaction__idempotency_key=key).update(created_at=when)

    for i in range(3):
        deposit(f"before{i}", 5_000_000 + i, month.start - timedelta(days=3, minutes=i), f"before {i}")
    for i in range(30):
        deposit(f"in{i}", 1_000_001 + i, _at(month, 1 + i % 28, 10, i), f"deposit {i} <b>&")
    for i in range(2):
        deposit(f"after{i}", 9_000_000 + i, month.end + timedelta(minutes=i), f"after {i}")
    return user, month


def _pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_the_pdf_holds_every_line_and_total_of_the_months_statement_page(month_user, client):
    user, month = month_user
    client.force_login(user)
    pages = [client.get(f"/statement/?month={month}&page={n}").content.decode() for n in (1, 2)]
    rows = [
        tuple(_unescape(cell) for cell in row)
        for page in pages
        for row in re.findall(ROW, page.split('id="statement"')[1])
    ]
    assert len(rows) == 30  # both pages of the site's statement
    response = client.get(f"/statement.pdf?month={month}")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="janction-statement-{month}.pdf"'
    text = " ".join(_pdf_text(response.content).split())
    for when, memo, account, amount in rows:
        assert f"{when} {memo} {account} {amount}" in text, (when, memo, amount)
    assert "Entries (30)" in text
    # The totals: the same table on the page and in the PDF, equal to the ledger's sums.
    totals = statement_totals(user_id=user.pk, month=month)
    assert len(totals) == 1
    total = totals[0]
    entries = Entry.objects.filter(account__owner=user)
    assert total.opening == entries.filter(created_at__lt=month.start).aggregate(s=Sum("amount"))["s"] == 15_000_003
    assert total.money_in == sum(1_000_001 + i for i in range(30))
    assert total.money_out == 0
    assert total.closing == entries.filter(created_at__lt=month.end).aggregate(s=Sum("amount"))["s"]
    shown = total.shown()
    row = f"Available USDC {shown['opening']} {shown['money_in']} {shown['money_out']} {shown['closing']}"
    assert row in text
    on_page = pages[0].split('id="statement-totals"')[1].split("</table>")[0]
    assert row in _unescape(re.sub(r"<[^>]+>", " ", on_page))
    assert "before 0" not in text and "after 0" not in text


def _unescape(text: str) -> str:
    return " ".join(html.unescape(text).split())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "a PDF statement covers one month"),
        ("?month=2026-13", "Month: give a month as YYYY-MM"),
        ("?month=1999-12", "Month: give a month as YYYY-MM"),
        ("?month=" + "9" * 5000, "Month: give a month as YYYY-MM"),
        ("?month=9999-01", "has not begun yet"),
        ("?month=2026-11&currency=EUR", "Currency: choose one of USDC, JCT"),
    ],
)
def test_a_bad_pdf_request_is_a_400_that_says_what_to_change(client, query, message):
    client.force_login(UserFactory())
    response = client.get("/statement.pdf" + query)
    assert response.status_code == 400 and message in response.content.decode()


def test_the_pdf_is_the_signed_in_users_own_and_fetches_nothing(month_user, client, monkeypatch):
    user, month = month_user
    other = UserFactory()
    ledger_deposit(user_id=other.pk, currency="USDC", amount=7, idempotency_key="theirs", memo="theirs")
    Entry.objects.filter(transaction__idempotency_key="theirs").update(created_at=_at(month, 2))
    # A memo that would be markup fetching a URL if it were not escaped.
    evil = '<img src="http://127.0.0.1:9/x.png"><link rel=stylesheet href="file:///etc/passwd">'
    ledger_deposit(user_id=user.pk, currency="USDC", amount=3, idempotency_key="evil", memo=evil)
    Entry.objects.filter(transaction__idempotency_key="evil").update(created_at=_at(month, 3))
    refused = []
    real = report_views.statement_pdf_bytes

    def recording(page_html):
        pdf, urls = real(page_html)
        refused.extend(urls)
        return pdf, urls

    monkeypatch.setattr(report_views, "statement_pdf_bytes", recording)
    assert client.get(f"/statement.pdf?month={month}").status_code == 302  # signed out: to the log-in page
    client.force_login(user)
    text = _pdf_text(client.get(f"/statement.pdf?month={month}").content)
    assert "theirs" not in text and "Entries (31)" in text
    assert '<img src="http://127.0.0.1:9/x.png">' in "".join(text.split()).replace("imgsrc", "img src")  # as text
    assert refused == []  # the memo stayed text: WeasyPrint was asked for no URL
    # The fetcher itself refuses: markup with a URL renders without fetching it.
    _, urls = real('<p>x</p><img src="http://127.0.0.1:9/y.png">')
    assert urls == ["http://127.0.0.1:9/y.png"]


def test_a_month_too_long_for_one_pdf_points_to_the_csv(month_user, client, monkeypatch):
    user, month = month_user
    monkeypatch.setattr(report_views, "MAX_PDF_LINES", 29)
    client.force_login(user)
    response = client.get(f"/statement.pdf?month={month}")
    assert response.status_code == 400
    assert f"export the CSV instead (/statement.csv?month={month})" in response.content.decode()
    monkeypatch.setattr(report_views, "MAX_PDF_LINES", 30)
    assert client.get(f"/statement.pdf?month={month}").status_code == 200


def test_the_statement_page_of_a_month_shows_its_totals_and_links_the_pdf(month_user, client):
    user, month = month_user
    client.force_login(user)
    page = client.get(f"/statement/?month={month}").content.decode()
    assert f'href="/statement.pdf?month={month}"' in page
    assert 'id="statement-totals"' in page
    assert 'id="statement-totals"' not in client.get("/statement/").content.decode()


# --- Provider report and system report -----------------------------------------------------------------------------


@pytest.fixture
def sold_month(db, settings, django_capture_on_commit_callbacks):
    """Last month of one provider's node (2 vGPUs): a known online history and a rental metered across midnight.

    Online (or draining) time: day 2 from 06:00, to day 3 12:00 (offline), day 5 all day (draining from noon),
    quarantined from day 6. The rental (1 vGPU, at most 5.5 hours) reports 3 h on day 2, 2 h across midnight and
    2 h on day 3 that metering clips to 0.5 h; a report after a gap is not metered yet and does not count.
    """
    settings.PRICING_DEFAULT_ASK = "0.50"
    month = _previous_month()
    provider, buyer, operator = UserFactory(), UserFactory(), UserFactory(is_staff=True)
    ledger_deposit(user_id=buyer.pk, currency="USDC", amount=1_000_000_000, idempotency_key="sold-fund")
    node = online_node(provider, name="rig", vgpus=2, price=500_000)
    with django_capture_on_commit_callbacks(execute=True):  # the round's allocation runs on commit
        rental = run_round(submit(buyer, vgpus=1, max_duration_seconds=19_800))
    placement = rental.placements.get()
    report_state(placement, "running")
    with django_capture_on_commit_callbacks(execute=True):
        sync()
    placement.refresh_from_db()
    day2 = _at(month, 2)
    for seq, start, hours in [(1, day2 + timedelta(hours=20), 3), (2, day2 + timedelta(hours=23), 2)]:
        report_usage(placement, seq, _ms(start), _ms(start) + hours * HOUR)
    report_usage(placement, 3, _ms(_at(month, 3, 1)), _ms(_at(month, 3, 3)))
    report_usage(placement, 5, _ms(_at(month, 4, 1)), _ms(_at(month, 4, 2)))  # seq 4 missing: waits
    with django_capture_on_commit_callbacks(execute=True):
        metering_run()
    placement.refresh_from_db()
    assert (placement.metered_through_seq, placement.metered_vgpu_ms) == (3, 19_800_000)
    NodeEvent.objects.filter(node=node).delete()
    history = [
        (NodeState.ONLINE, _at(month, 2, 6)),
        (NodeState.OFFLINE, _at(month, 3, 12)),
        (NodeState.ONLINE, _at(month, 5)),
        (NodeState.DRAINING, _at(month, 5, 12)),
        (NodeState.QUARANTINED, _at(month, 6)),
    ]
    previous = NodeState.PENDING
    for state, at in history:
        event = NodeEvent.objects.create(node=node, from_state=previous, to_state=state, reason="test history")
        NodeEvent.objects.filter(pk=event.pk).update(at=at)
        previous = state
    Node.objects.filter(pk=node.pk).update(created_at=month.start - timedelta(days=1), enrolled_at=month.start)
    # The month's money and market: every entry, bid and round of the rental moved to day 2.
    Entry.objects.all().update(created_at=_at(month, 2, 23, 30))
    Bid.objects.all().update(created_at=_at(month, 2, 19))
    MarketRound.objects.all().update(created_at=_at(month, 2, 19, 0))
    return {"month": month, "provider": provider, "operator": operator, "node": node, "placement": placement}


def test_utilisation_is_metered_vgpu_hours_over_online_vgpu_hours_per_day(sold_month):
    month, node, placement = sold_month["month"], sold_month["node"], sold_month["placement"]
    day = {n: _at(month, n).date() for n in range(1, 8)}
    usage = sold_vgpu_ms(start=month.start, end=month.end)
    assert [(u.node_id, dict(u.per_day)) for u in usage] == [(node.pk, {day[2]: 4 * HOUR, day[3]: 3 * HOUR // 2})]
    assert sum(usage[0].per_day.values()) == placement.metered_vgpu_ms  # what metering billed, to the ms
    online = online_vgpu_ms(node_ids=[node.pk], start=month.start, end=month.end)[node.pk]
    assert dict(online) == {day[2]: 2 * 18 * HOUR, day[3]: 2 * 12 * HOUR, day[5]: 2 * 24 * HOUR}
    node.refresh_from_db()
    for n in range(1, 8):  # the same online time as reputation's uptime evidence reads, times the vGPUs
        assert online.get(day[n], 0) == round(2 * 24 * HOUR * (uptime_fraction(node=node, day=day[n]) or 0))
    (report,) = provider_utilisation(owner_id=sold_month["provider"].pk, month=month)
    by_day = {d.day: d for d in report.days}
    assert len(report.days) == len(month.days)
    assert (by_day[day[2]].sold_ms, by_day[day[2]].online_ms, str(by_day[day[2]].percent)) == (
        4 * HOUR,
        36 * HOUR,
        "11.1",
    )
    assert str(by_day[day[3]].percent) == "6.2" and by_day[day[4]].percent is None
    assert str(by_day[day[5]].percent) == "0.0"
    assert (report.total.sold_ms, report.total.online_ms) == (placement.metered_vgpu_ms, 108 * HOUR)


def test_the_provider_reports_charts_are_the_selectors_results(sold_month, client):
    month, provider = sold_month["month"], sold_month["provider"]
    client.force_login(provider)
    page = client.get(f"/reports/provider/?month={month}").content.decode()
    earnings = earnings_per_day(user_id=provider.pk, month=month)
    credited = Entry.objects.filter(
        account__owner=provider, account__kind=AccountKind.EARNINGS, amount__gt=0, created_at__gte=month.start
    ).aggregate(s=Sum("amount"))["s"]
    assert credited > 0 and sum(p.amount for p in earnings) == credited
    assert _chart(page, "report-earnings-data") == json.loads(
        json.dumps(daily_amount_chart(earnings, label="Earned (USDC)"))
    )
    (node,) = provider_utilisation(owner_id=provider.pk, month=month)
    data = _chart(page, f"node-{node.node_id}-utilisation-data")
    assert data == json.loads(json.dumps(utilisation_chart(node.days)))
    assert data["datasets"][0]["data"][1] == {"x": _at(month, 2).date().isoformat(), "y": "11.1"}
    assert data["datasets"][0]["data"][0]["y"] is None  # nothing online on day 1: a gap, not 0 %
    assert '<span class="sold">5.500</span> vGPU-hours sold of <span class="online">108.000</span>' in page
    # Another provider sees none of it.
    client.force_login(UserFactory())
    other = client.get(f"/reports/provider/?month={month}").content.decode()
    assert 'id="no-report-nodes"' in other and '<span id="report-earnings-total">0</span>' in other


def test_the_system_reports_figures_and_charts_are_the_database_aggregates(sold_month, client):
    month = sold_month["month"]
    SettlementAlert.objects.create(kind=SettlementAlert.Kind.POST_FAILED, message="post failed: nonce too low")
    SettlementAlert.objects.create(kind=SettlementAlert.Kind.POST_FAILED, message="resolved one", resolved_at=month.end)
    client.force_login(sold_month["operator"])
    response = client.get(f"/reports/system/?month={month}")
    assert response.status_code == 200
    page = response.content.decode()
    (pool,) = pool_reports(month=month)
    assert (pool.name, pool.vgpus, pool.bids, pool.units_wanted, pool.units_won) == ("ada-12g", 2, 1, 1, 1)
    assert (pool.total.sold_ms, pool.total.online_ms) == (sold_month["placement"].metered_vgpu_ms, 108 * HOUR)
    assert _chart(page, f"pool-{pool.pool_id}-utilisation-data") == json.loads(json.dumps(utilisation_chart(pool.days)))
    (rounds,) = round_summaries(month=month)
    assert (rounds.rounds, rounds.filled, rounds.units) == (MarketRound.objects.count(), 1, 1)
    prices = month_clearing_prices(month=month)
    assert _chart(page, "report-price-data") == json.loads(json.dumps(round_price_chart(prices)))
    assert _chart(page, "report-price-data")["datasets"][0]["data"][0]["y"] == "0.500000"
    fees = platform_per_day(kind=AccountKind.FEES, month=month)
    fee_total = Entry.objects.filter(account__owner__isnull=True, account__kind=AccountKind.FEES).aggregate(
        s=Sum("amount")
    )["s"]
    assert fee_total > 0 and sum(p.amount for p in fees) == fee_total
    assert _chart(page, "report-fees-data") == json.loads(json.dumps(daily_amount_chart(fees, label="Fees (USDC)")))
    market = platform_per_day(kind=AccountKind.MARKET, month=month)
    assert _chart(page, "report-market-data") == json.loads(
        json.dumps(daily_amount_chart(market, label="Market account, net (USDC)"))
    )
    assert "post failed: nonce too low" in page and "resolved one" not in page
    assert '<td>ada-12g</td><td class="num">2</td><td class="num">108.000</td><td class="num">5.500</td>' in page


def test_the_system_report_is_for_operators_only(sold_month, client):
    response = client.get("/reports/system/?month=2026-11")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    client.force_login(sold_month["provider"])
    response = client.get("/reports/system/")
    assert response.status_code == 403
    assert "Supply and demand" not in response.content.decode()
    assert 'href="/reports/system/"' not in client.get("/dashboard/").content.decode()  # no link for them either
    client.force_login(sold_month["operator"])
    assert 'href="/reports/system/"' in client.get("/dashboard/").content.decode()


@pytest.mark.parametrize("path", ["/reports/provider/", "/reports/system/"])
@pytest.mark.parametrize(
    ("month", "message"),
    [
        ("2026-00", "Month: give a month as YYYY-MM"),
        ("abc", "Month: give a month as YYYY-MM"),
        ("9999-12", "has not begun"),
    ],
)
def test_a_report_for_a_bad_month_is_a_400_that_says_what_to_change(client, path, month, message):
    client.force_login(UserFactory(is_staff=True))
    response = client.get(f"{path}?month={month}")
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page and 'aria-invalid="true"' in page and 'id="month-error"' in page


def test_the_landing_page_says_what_the_buyer_and_provider_prices_are(client):
    for path in ("/", "/network/"):  # the page and the fragment htmx refreshes it with
        note = client.get(path).content.decode().split('id="network-prices-note"')[1].split("</p>")[0]
        assert "<strong>buyer price</strong> is what each renter pays" in note
        assert "before the platform fee" in note and 'href="/market/#how-prices-work"' in note


def test_online_time_of_the_current_month_stops_now(db):
    node = online_node(UserFactory(), name="fresh", vgpus=2)
    month = current_month()
    Node.objects.filter(pk=node.pk).update(created_at=month.start, enrolled_at=month.start)
    NodeEvent.objects.filter(node=node).update(at=month.start)
    online = online_vgpu_ms(node_ids=[node.pk], start=month.start, end=month.end)[node.pk]
    elapsed = _ms(datetime.now(UTC)) - _ms(month.start)
    assert 0 < sum(online.values()) <= 2 * elapsed  # never the rest of the month, which has not happened
    assert max(online) == datetime.now(UTC).date()
