"""The state directory: atomic JSON record and identity files."""

from __future__ import annotations

import json
import os
import stat

import pytest

from agent.state import AgentState, PlacementRecord, StateStore, UsageRecord


def _state() -> AgentState:
    record = PlacementRecord("p-1", "img", ["0:0", "0:1"], "running", started_at_ms=5, usage_seq=2, log_seq=9)
    record.log_cursor = "1795620644698955091"
    record.pending_usage.append(UsageRecord("p-1", 2, 5, 10, 2, 10, b"\x01\x02"))
    return AgentState(node_id="n-1", connect_address="gw:1", fake_seed="seed", placements={"p-1": record})


def test_state_round_trips(tmp_path):
    store = StateStore(tmp_path / "s")
    store.save(_state())
    assert StateStore(tmp_path / "s").load() == _state()


def test_a_fresh_state_gets_a_persistent_fake_seed(tmp_path):
    first = StateStore(tmp_path).load()
    assert len(first.fake_seed) == 32
    assert StateStore(tmp_path).load().fake_seed == first.fake_seed


def test_files_and_directory_are_private(tmp_path):
    store = StateStore(tmp_path / "s")
    store.save(_state())
    store.write_secret(store.key_path, b"secret")
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    for path in (store.state_path, store.key_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_previous_state_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    store = StateStore(tmp_path)
    store.save(_state())

    def broken_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    changed = _state()
    changed.node_id = "n-2"
    with pytest.raises(OSError, match="disk full"):
        store.save(changed)
    monkeypatch.undo()
    assert store.load().node_id == "n-1"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["state.json"]


def test_enrolled_needs_key_certificate_and_ca(tmp_path):
    store = StateStore(tmp_path)
    assert not store.enrolled
    for path in (store.key_path, store.cert_path):
        store.write_secret(path, b"x")
    assert not store.enrolled
    store.write_secret(store.ca_path, b"x")
    assert store.enrolled


def test_an_unknown_state_version_is_refused(tmp_path):
    store = StateStore(tmp_path)
    store.state_path.write_text(json.dumps({"version": 99}))
    with pytest.raises(ValueError, match="unsupported state version 99"):
        store.load()
