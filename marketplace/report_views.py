"""Reports: the monthly statement as PDF, the provider's earnings and utilisation, the operator's system report."""

import logging

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone

from ledger.currencies import from_base_units
from ledger.models import AccountKind, Currency
from marketplace.periods import current_month, parse_month
from marketplace.report_selectors import (
    batch_status_counts,
    daily_amount_chart,
    earnings_per_day,
    month_batches,
    month_clearing_prices,
    open_alerts,
    platform_balance,
    platform_per_day,
    pool_reports,
    provider_utilisation,
    round_price_chart,
    round_summaries,
    statement_totals,
    utilisation_chart,
)
from marketplace.selectors import statement_entries

logger = logging.getLogger(__name__)

# A PDF is rendered in the request; a month with more lines than this gets a 400 that points to the CSV.
MAX_PDF_LINES = 2000


def _period(request):
    """Return the month of ?month= (default: the current UTC month) and an error message when it is refused."""
    month, error = parse_month(request.GET.get("month", ""))
    return (month or current_month()), error


def statement_pdf_bytes(html: str) -> tuple[bytes, list[str]]:
    """Render a statement page to PDF with WeasyPrint, fetching nothing; return the PDF and the URLs it refused.

    The statement is self-contained (inline styles, no image), so the fetcher refuses every URL: markup that
    slipped through escaping could not make the server fetch a URL or read a file.
    """
    # A heavy import (Pango through cffi, about 2 s) that only the PDF needs, kept out of every process's start.
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    refused: list[str] = []

    class NoFetching(URLFetcher):
        def fetch(self, url, headers=None):
            refused.append(url)
            raise ValueError(f"The statement PDF fetches nothing ({url[:80]}).")

    pdf = HTML(string=html, base_url=None, url_fetcher=NoFetching(fail_on_errors=False)).write_pdf()
    return pdf, refused


def statement_context(*, user, currency: str, month) -> dict:
    """Return what the monthly statement shows: every entry of the month, newest first, and each account's totals."""
    entries = statement_entries(user_id=user.pk, currency=currency, month=(month.year, month.number))
    rows = [
        {"entry": entry, "amount": from_base_units(int(entry.amount), entry.currency)}
        for entry in entries[: MAX_PDF_LINES + 1]
    ]
    totals = [
        {"total": total, **total.shown()} for total in statement_totals(user_id=user.pk, month=month, currency=currency)
    ]
    return {"rows": rows, "totals": totals, "month": str(month), "currency": currency, "user": user}


@login_required
def statement_pdf(request):
    """One month's statement as a PDF: the same lines and totals as the page for that month."""
    text = request.GET.get("month", "")
    month, error = parse_month(text)
    if not text:
        error = "Month: a PDF statement covers one month; add ?month=YYYY-MM, e.g. ?month=2026-11."
    if error:
        return HttpResponseBadRequest(error, content_type="text/plain; charset=utf-8")
    currency = request.GET.get("currency", "")
    if currency and currency not in Currency.values:
        return HttpResponseBadRequest(
            f"Currency: choose one of {', '.join(Currency.values)} or leave it out.",
            content_type="text/plain; charset=utf-8",
        )
    context = statement_context(user=request.user, currency=currency, month=month)
    if len(context["rows"]) > MAX_PDF_LINES:
        return HttpResponseBadRequest(
            f"{month} has more than {MAX_PDF_LINES} entries, too many for one PDF: export the CSV instead "
            f"(/statement.csv?month={month}), or choose one currency.",
            content_type="text/plain; charset=utf-8",
        )
    context["generated_at"] = timezone.now()
    try:
        pdf, _ = statement_pdf_bytes(render_to_string("marketplace/statement_pdf.html", context, request=None))
    except OSError:  # WeasyPrint could not load Pango: a server set-up problem, said as such
        logger.exception("statement PDF: WeasyPrint cannot load its system libraries")
        return HttpResponse(
            "PDF statements are unavailable on this server: WeasyPrint needs Pango (run `make system-deps`). "
            f"The same statement is on /statement/?month={month} and in /statement.csv?month={month}.",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="janction-statement-{month}.pdf"'
    return response


def _chart_row(prefix: str, item, item_id: int) -> dict:
    chart_id = f"{prefix}-{item_id}-utilisation"
    return {prefix: item, "chart": utilisation_chart(item.days), "chart_id": chart_id, "data_id": f"{chart_id}-data"}


@login_required
def provider_report_page(request):
    """A provider's month: earnings per day and each node's utilisation (vGPU-hours sold / online) per day."""
    month, error = _period(request)
    earnings = earnings_per_day(user_id=request.user.pk, month=month)
    nodes = provider_utilisation(owner_id=request.user.pk, month=month)
    context = {
        "month": str(month),
        "month_error": error,
        "earnings": earnings,
        "earnings_chart": daily_amount_chart(earnings, label="Earned (USDC)"),
        "earnings_total": from_base_units(sum(p.amount for p in earnings), "USDC"),
        "nodes": [_chart_row("node", node, node.node_id) for node in nodes],
    }
    return render(request, "marketplace/provider_report.html", context, status=400 if error else 200)


def system_report_page(request):
    """The operator's month: supply and demand per pool, utilisation, rounds, market account, fees, batches, alerts."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
    if not request.user.is_staff:
        raise PermissionDenied("The system report is for operators (staff accounts).")
    month, error = _period(request)
    pools = pool_reports(month=month)
    rounds = month_clearing_prices(month=month)
    fees = platform_per_day(kind=AccountKind.FEES, month=month)
    market = platform_per_day(kind=AccountKind.MARKET, month=month)
    batches = month_batches(month=month)
    end = min(month.end, timezone.now())
    context = {
        "month": str(month),
        "month_error": error,
        "pools": [_chart_row("pool", pool, pool.pool_id) for pool in pools],
        "round_summaries": round_summaries(month=month),
        "price_chart": round_price_chart(rounds),
        "price_points": len(rounds),
        "fees_chart": daily_amount_chart(fees, label="Fees (USDC)"),
        "fees_total": from_base_units(sum(p.amount for p in fees), "USDC"),
        "market_chart": daily_amount_chart(market, label="Market account, net (USDC)"),
        "market_net": from_base_units(sum(p.amount for p in market), "USDC"),
        "market_balance": from_base_units(platform_balance(kind=AccountKind.MARKET, at=end), "USDC"),
        "fees_balance": from_base_units(platform_balance(kind=AccountKind.FEES, at=end), "USDC"),
        "balance_at": end,
        "batches": batches,
        "batch_counts": batch_status_counts(batches),
        "alerts": open_alerts(),
    }
    return render(request, "marketplace/system_report.html", context, status=400 if error else 200)
