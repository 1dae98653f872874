"""Reports: the monthly statement's PDF holds the page's lines and totals; every report chart equals its aggregate."""

import html
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum
from pypdf import PdfReader

from ledger.models import Entry
from ledger.services import ledger_deposit
from marketplace import report_views
from marketplace.periods import Month, current_month
from marketplace.report_selectors import (
    statement_totals,
)
from tests.factories import UserFactory

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
