"""Metering: contiguous, signed intervals per placement."""

from __future__ import annotations

from agent.identity import generate_private_key
from agent.protocol.signing import verify_usage_report
from agent.state import PlacementRecord
from agent.usage import UsageMeter


def _running(started: int = 1_000) -> PlacementRecord:
    return PlacementRecord("p-1", "img", ["0:0", "0:1"], "running", started_at_ms=started)


def test_reports_are_due_every_interval_contiguous_and_signed():
    key = generate_private_key()
    meter = UsageMeter(key, interval_ms=10_000)
    record = _running()
    assert meter.next_report(record, 10_999) is None
    first = meter.next_report(record, 11_000)
    assert meter.next_report(record, 11_500) is None
    second = meter.next_report(record, 21_700)
    assert (first.seq, first.interval_start_ms, first.interval_end_ms) == (1, 1_000, 11_000)
    assert (second.seq, second.interval_start_ms, second.interval_end_ms) == (2, 11_000, 21_700)
    assert second.vgpu_count == 2 and second.vgpu_milliseconds == 21_400
    assert all(verify_usage_report(key.public_key(), report) for report in (first, second))
    assert [report.seq for report in record.pending_usage] == [1, 2]
    assert (record.usage_seq, record.usage_end_ms) == (2, 21_700)


def test_an_exit_produces_a_last_report_up_to_the_exit_and_nothing_after():
    meter = UsageMeter(generate_private_key(), interval_ms=10_000)
    record = _running()
    meter.next_report(record, 11_000)
    record.state, record.ended_at_ms = "exited", 14_250
    last = meter.next_report(record, 99_000)
    assert (last.interval_start_ms, last.interval_end_ms, last.vgpu_milliseconds) == (11_000, 14_250, 6_500)
    assert meter.next_report(record, 199_000) is None


def test_nothing_is_reported_before_the_workload_runs():
    meter = UsageMeter(generate_private_key(), interval_ms=1)
    record = PlacementRecord("p-1", "img", ["0:0"])
    assert meter.next_report(record, 10**12) is None
    record.state, record.ended_at_ms = "failed", 10**12
    assert meter.next_report(record, 10**12) is None


def test_acknowledging_forgets_exactly_that_report():
    meter = UsageMeter(generate_private_key(), interval_ms=1)
    record = _running()
    for now in (2_000, 3_000, 4_000):
        meter.next_report(record, now)
    assert meter.acknowledge(record, 2)
    assert not meter.acknowledge(record, 2)
    assert [report.seq for report in record.pending_usage] == [1, 3]
