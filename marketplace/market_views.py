"""Public pages (landing, market, rounds) and the buyer's ledger statement with its CSV export."""

import csv
import json
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render

from janction.errors import ValidationFailed
from ledger.currencies import from_base_units
from ledger.models import Currency
from marketplace.models import Region
from marketplace.periods import Month, parse_month
from marketplace.report_selectors import statement_totals
from marketplace.selectors import (
    clearing_price_chart,
    clearing_prices,
    gpu_models,
    market_nodes,
    network_figures,
    node_alias,
    pool_catalog,
    statement_entries,
)
from pricing.models import MarketRound
from reputation.acts import min_score_filter, pool_score_distributions

STATEMENT_PAGE_SIZE = 25
MAX_FILTER_CHARS = 100


def home(request):
    """The landing page: live network figures (refreshed by htmx) and how renting works."""
    return render(request, "marketplace/home.html", {"figures": network_figures()})


def network_fragment(request):
    """The landing page's live figures alone, for htmx to swap in every few seconds."""
    return render(request, "marketplace/_network.html", {"figures": network_figures()})


def _filters(request) -> tuple[dict, list[str]]:
    """Read the market's filters from the query string; return them and a message for each one that is refused."""
    errors = []
    pool = request.GET.get("pool", "")[:MAX_FILTER_CHARS]
    model = request.GET.get("gpu", "")[:MAX_FILTER_CHARS]
    region = request.GET.get("region", "")
    if region and region not in Region.values:
        errors.append(f"Region: choose one of {', '.join(Region.values)}.")
        region = ""
    max_price = None
    text = request.GET.get("max_price", "").strip()
    if text:
        try:
            max_price = Decimal(text[:MAX_FILTER_CHARS])
            if not max_price.is_finite() or max_price < 0 or max_price > 1_000_000:
                raise InvalidOperation
        except InvalidOperation:
            errors.append("Max ask: give a number of USDC per vGPU-hour between 0 and 1000000, e.g. 1.50.")
            max_price = None
    min_reliability = None
    text = request.GET.get("min_reliability", "").strip()
    if text:
        if text.isdigit() and int(text) <= 100:
            min_reliability = int(text)
        else:
            errors.append("Minimum reliability: give a whole percentage from 0 to 100.")
    min_score = None
    try:
        min_score = min_score_filter(request.GET.get("min_score", ""))
    except ValidationFailed as exc:
        errors.append(f"Minimum score: {exc.message}")
    filters = {"pool": pool, "gpu_model": model, "region": region, "max_price": max_price}
    filters["min_reliability"] = min_reliability
    filters["min_score"] = min_score
    return filters, errors


def market_page(request):
    """The public market: pools with their GPUs, anonymised nodes with filters, clearing prices, latest rounds."""
    filters, errors = _filters(request)
    catalog = pool_catalog()
    prices = clearing_prices(pool=filters["pool"])
    rounds = MarketRound.objects.select_related("pool").order_by("-created_at", "-pk")
    if filters["pool"]:
        rounds = rounds.filter(pool__name=filters["pool"])
    context = {
        "catalog": catalog,
        "pools": [spec.market for spec in catalog],
        "nodes": market_nodes(**filters),
        "filters": filters,
        "filter_errors": errors,
        "gpu_models": gpu_models(),
        "regions": Region.choices,
        "price_chart": clearing_price_chart(prices),
        "price_points": len(prices),
        "rounds": rounds[:20],
        "pool_scores": pool_score_distributions(),
    }
    return render(request, "marketplace/market.html", context, status=400 if errors else 200)


def round_page(request, round_id: int):
    """One stored round as a readable page; the engine's exact inputs and outputs stay one click away."""
    market_round = get_object_or_404(MarketRound.objects.select_related("pool"), pk=round_id)
    awards = [
        {
            "node": node_alias(award.node_id),
            "units": award.units_sold,
            "ask": from_base_units(award.reserve_price_per_hour, "USDC"),
            "payment": from_base_units(award.payment_per_hour, "USDC"),
        }
        for award in market_round.awards.order_by("pk")
    ]
    units = market_round.units_traded
    context = {
        "round": market_round,
        "awards": awards,
        "buyer_payments": from_base_units(market_round.buyer_payments_per_hour, "USDC"),
        "provider_payments": from_base_units(market_round.provider_payments_per_hour, "USDC"),
        "budget": from_base_units(market_round.budget_per_hour, "USDC"),
        "buyer_price": units and from_base_units(market_round.buyer_payments_per_hour // units, "USDC"),
        "inputs": json.dumps(market_round.inputs, indent=2, sort_keys=True),
        "outputs": json.dumps(market_round.outputs, indent=2, sort_keys=True),
    }
    return render(request, "marketplace/round.html", context)


def _currency(request) -> str:
    currency = request.GET.get("currency", "")
    return currency if currency in Currency.values else ""


def _month(request) -> tuple[tuple[int, int] | None, str | None]:
    """Read ?month=YYYY-MM (a monthly statement); return it and an error message when it is not a month."""
    month, error = parse_month(request.GET.get("month", ""))
    return ((month.year, month.number) if month else None), error


@login_required
def statement_page(request):
    """The signed-in user's ledger statement, 25 entries a page, newest first."""
    currency = _currency(request)
    month, error = _month(request)
    entries = statement_entries(user_id=request.user.pk, currency=currency, month=month)
    paginator = Paginator(entries, STATEMENT_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    rows = [{"entry": entry, "amount": from_base_units(int(entry.amount), entry.currency)} for entry in page]
    month_text = f"{month[0]:04d}-{month[1]:02d}" if month else ""
    query = urlencode({k: v for k, v in {"currency": currency, "month": month_text}.items() if v})
    totals = []
    if month:
        totals = statement_totals(user_id=request.user.pk, month=Month(*month), currency=currency)
    context = {
        "page": page,
        "rows": rows,
        "totals": [{"total": total, **total.shown()} for total in totals],
        "currency": currency,
        "currencies": Currency.values,
        "month": month_text,
        "month_error": error,
        "query": query,
    }
    return render(request, "marketplace/statement.html", context, status=400 if error else 200)


class _Echo:
    def write(self, value):
        return value


@login_required
def statement_csv(request):
    """The whole statement as CSV (amounts in whole currency units, exact), streamed."""
    currency = _currency(request)
    month, error = _month(request)
    if error:
        return HttpResponseBadRequest(error, content_type="text/plain; charset=utf-8")
    entries = statement_entries(user_id=request.user.pk, currency=currency, month=month)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(["time", "transaction", "kind", "memo", "account", "currency", "amount"])
        for entry in entries.iterator(chunk_size=500):
            yield writer.writerow(
                [
                    entry.created_at.isoformat(),
                    entry.transaction_id,
                    entry.transaction.kind,
                    _csv_safe(entry.transaction.memo),
                    entry.account.kind,
                    entry.currency,
                    from_base_units(int(entry.amount), entry.currency),
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    name = "janction-statement" + (f"-{month[0]:04d}-{month[1]:02d}" if month else "") + ".csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _csv_safe(text: str) -> str:
    """Keep a spreadsheet from reading a memo as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
