"""Tests of `python -m pricing.pvcg` and of input validation."""

import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from pricing.pvcg import Ask, Bid, MarketError, clear, format_amount, parse_market
from pricing.pvcg.__main__ import main as pvcg_main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = (
    '{"asks": [{"id": "node-1", "units": 4, "cost": "0.40"}],\n'
    ' "bids": [{"id": "rental-7", "units": 2, "value": "1.10"}], "mechanism": "vcg"}\n'
)
EXAMPLE_OUT = (
    '{"social_surplus": "1.40", "bids": {"rental-7": {"won": true, "payment": "0.80"}}, '
    '"asks": {"node-1": {"units_sold": 2, "vcg_payment": "2.20", "adjustment": "0", "payment": "2.20"}}, '
    '"budget": "-1.40"}\n'
)


def run_main(monkeypatch, capsys, data: bytes) -> tuple[int, str, str]:
    """Run the command-line entry point in-process on ``data``."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    status = pvcg_main()
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def market(asks=None, bids=None, **extra) -> dict:
    """Return a market object with one valid ask and bid unless overridden."""
    return {
        "asks": [{"id": "a", "units": 2, "cost": "0.40"}] if asks is None else asks,
        "bids": [{"id": "b", "units": 1, "value": "1.00"}] if bids is None else bids,
        **extra,
    }


def bid(**fields) -> list[dict]:
    """Return a one-bid list with ``fields`` overriding a valid bid."""
    return [{"id": "b", "units": 1, "value": "1", **fields}]


def test_example_round_trips_through_a_real_process():
    done = subprocess.run(
        [sys.executable, "-m", "pricing.pvcg"], input=EXAMPLE, capture_output=True, text=True, cwd=REPO, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, EXAMPLE_OUT, "")


def test_invalid_input_exits_2_from_a_real_process():
    done = subprocess.run(
        [sys.executable, "-m", "pricing.pvcg"], input="[]", capture_output=True, text=True, cwd=REPO, check=False
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: market must be an object, got []\n"


def test_ceiling_turns_on_the_adjustment(monkeypatch, capsys):
    doc = market(asks=[{"id": "node-1", "units": 4, "cost": "0.40"}], bids=bid(id="r", value="1.10"), max_cost="1.00")
    doc["mechanism"] = "vcg"
    status, out, _ = run_main(monkeypatch, capsys, json.dumps(doc).encode())
    assert status == 0
    assert json.loads(out) == {
        "social_surplus": "0.70",
        "bids": {"r": {"won": True, "payment": "0.40"}},
        "asks": {"node-1": {"units_sold": 1, "vcg_payment": "1.10", "adjustment": "-0.10", "payment": "1.00"}},
        "budget": "-0.60",
    }


def test_default_mechanism_trades_a_lone_pair_at_the_reference_price(monkeypatch, capsys):
    doc = market(
        asks=[{"id": "node-1", "units": 4, "cost": "0.40"}],
        bids=[{"id": "rental-7", "units": 2, "value": "1.10"}],
        reference_price="0.50",
    )
    status, out, _ = run_main(monkeypatch, capsys, json.dumps(doc).encode())
    assert status == 0
    # Neither report sets the price: both sides trade 2 units at the pool's reference of 0.50.
    assert json.loads(out) == {
        "social_surplus": "1.40",
        "bids": {"rental-7": {"won": True, "payment": "1.00"}},
        "asks": {"node-1": {"units_sold": 2, "vcg_payment": "2.20", "adjustment": "-1.20", "payment": "1.00"}},
        "budget": "0",
    }


def test_default_mechanism_without_a_reference_reduces_a_lone_pair_to_no_trade(monkeypatch, capsys):
    status, out, _ = run_main(monkeypatch, capsys, EXAMPLE.replace(', "mechanism": "vcg"', "").encode())
    assert status == 0
    assert json.loads(out) == {
        "social_surplus": "0",
        "bids": {"rental-7": {"won": False, "payment": "0"}},
        "asks": {"node-1": {"units_sold": 0, "vcg_payment": "2.20", "adjustment": "-2.20", "payment": "0"}},
        "budget": "0",
    }


def test_empty_market_and_exact_decimals(monkeypatch, capsys):
    status, out, _ = run_main(monkeypatch, capsys, b'{"asks": [], "bids": [], "max_cost": null}')
    assert (status, json.loads(out)) == (0, {"social_surplus": "0", "bids": {}, "asks": {}, "budget": "0"})
    doc = market(asks=[{"id": "a", "units": 3, "cost": "0.1234560"}], bids=bid(units=3), reference_price="0.5")
    status, out, _ = run_main(monkeypatch, capsys, json.dumps(doc).encode())
    assert (status, json.loads(out)["social_surplus"]) == (0, "2.629632")


JSON_ERRORS = [
    (b"", "invalid JSON"),
    (b"{not json", "invalid JSON"),
    (b"[" * 100_000, "invalid JSON"),
    (b"\xff\xfe", "input is not UTF-8"),
    (b'{"asks": [], "asks": [], "bids": []}', 'key "asks" appears twice'),
    (b'{"asks": [], "bids": [{"id": "b", "units": 1, "value": NaN}]}', "NaN is not allowed"),
]
FIELD_ERRORS = [
    ([], "market must be an object, got []"),
    ({"bids": []}, 'market is missing "asks"'),
    ({"asks": []}, 'market is missing "bids"'),
    ({"asks": [], "bids": {}}, "bids must be a list"),
    (market(extra=1), 'market has unknown field "extra"'),
    (market(asks=[7]), "asks[0] must be an object, got 7"),
    (market(asks=[{"units": 1, "cost": "1"}]), "asks[0].id is missing"),
    (market(bids=[{"id": "b", "value": "1"}]), "bids[0].units is missing"),
    (market(bids=[{"id": "b", "units": 1}]), "bids[0].value is missing"),
    (market(asks=[{"id": "a", "units": 1, "cost": "1", "unit": 1}]), 'asks[0] has unknown field "unit"'),
    (market(bids=bid(id="a")), 'bids[0].id "a" duplicates asks[0].id'),
    (market(asks=[{"id": "x", "units": 1, "cost": "1"}] * 2), 'asks[1].id "x" duplicates asks[0].id'),
    (market(bids=bid(id="")), "bids[0].id must be a non-empty string"),
    (market(bids=bid(id=5)), "bids[0].id must be a non-empty string"),
    (market(bids=bid(units=-1)), "bids[0].units must be a positive integer, got -1"),
    (market(bids=bid(units=0)), "bids[0].units must be a positive integer, got 0"),
    (market(bids=bid(units=2.0)), "bids[0].units must be a positive integer, got 2.0"),
    (market(bids=bid(units="2")), 'bids[0].units must be a positive integer, got "2"'),
    (market(bids=bid(units=True)), "bids[0].units must be a positive integer, got true"),
    (market(bids=bid(units=10**7)), "bids[0].units must be at most 1000000, got 10000000"),
    (market(bids=bid(value="-0.10")), 'bids[0].value must not be negative, got "-0.10"'),
    (market(bids=bid(value=0.4)), "bids[0].value must be a decimal string"),
    (market(bids=bid(value="NaN")), "bids[0].value must be a decimal string"),
    (market(bids=bid(value="Infinity")), "bids[0].value must be a decimal string"),
    (market(bids=bid(value="1e3")), "bids[0].value must be a decimal string"),
    (market(bids=bid(value=" 1")), "bids[0].value must be a decimal string"),
    (market(bids=bid(value="0.1234567")), "bids[0].value has more than 6 decimal places"),
    (market(bids=bid(value="1000000.01")), "bids[0].value must be at most 1000000"),
    (market(max_cost="0.30"), "asks[0].cost 0.40 exceeds max_cost 0.30"),
    (market(max_cost=1), "max_cost must be a decimal string"),
    (market(mechanism="VCG"), "mechanism must be one of 'trade-reduction', 'vcg', got \"VCG\""),
    (market(mechanism=None), "mechanism must be one of"),
    (market(reference_price="-1"), 'reference_price must not be negative, got "-1"'),
    (market(reference_price=0.5), "reference_price must be a decimal string"),
    (
        market(asks=[{"id": "a", "units": 10**6, "cost": "1000000"}], bids=bid(units=10**6)),
        "market too large for exact 64-bit arithmetic",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), JSON_ERRORS + [(json.dumps(obj).encode(), message) for obj, message in FIELD_ERRORS]
)
def test_invalid_input_exits_2_with_one_line(monkeypatch, capsys, data, message):
    status, out, err = run_main(monkeypatch, capsys, data)
    assert (status, out) == (2, "")
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert err.endswith("\n")
    assert message in err


@pytest.mark.parametrize(("obj", "message"), FIELD_ERRORS)
def test_parse_market_raises_the_same_messages(obj, message):
    with pytest.raises(MarketError) as caught:
        parse_market(obj)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("asks", "bids", "message"),
    [
        ([Ask("a", 1, 0.4)], [], "asks[0].cost must be a Decimal"),
        ([Ask("a", 1, Decimal("NaN"))], [], "asks[0].cost must be a finite decimal"),
        ([], [Bid("b", 1, Decimal("-0.5"))], "bids[0].value must not be negative"),
        ([], [Bid("b", 1, Decimal("1E-7"))], "bids[0].value has more than 6 decimal places"),
        ([Ask("x", 1, Decimal(1))], [Bid("x", 1, Decimal(1))], 'bids[0].id "x" duplicates asks[0].id'),
    ],
)
def test_clear_validates_dataclasses(asks, bids, message):
    with pytest.raises(MarketError) as caught:
        clear(asks, bids)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("amount", "text"),
    [("0", "0"), ("1.4", "1.40"), ("-1.4", "-1.40"), ("0.000001", "0.000001"), ("12", "12.00"), ("2.125", "2.125")],
)
def test_format_amount(amount, text):
    assert format_amount(Decimal(amount)) == text
