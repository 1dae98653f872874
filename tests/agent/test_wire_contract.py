"""The wire contract grows additively: today's agent.proto against the last released one (issue 10, item 6)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from agent.protocol.descriptor import breaking_changes, message_classes, released_snapshot, snapshot
from tests.agent.conftest import REPO

HELLO = ".janction.agent.v1.Hello"
USAGE = ".janction.agent.v1.UsageReport"
STATE = ".janction.agent.v1.PlacementState"
GATEWAY = ".janction.agent.v1.AgentGateway"


@pytest.fixture(scope="module")
def released():
    return released_snapshot()["description"]


def test_the_current_proto_breaks_nothing_of_the_released_one(released):
    assert breaking_changes(released, snapshot()["description"]) == []


def test_the_released_snapshot_is_of_this_proto_file():
    stored = released_snapshot()
    assert stored["file"] == "janction/agent/v1/agent.proto"
    assert set(message_classes(stored)) >= {"AgentMessage", "ControlMessage", "EnrollRequest", "Hello", "UsageReport"}


def test_the_snapshot_command_prints_the_current_proto():
    printed = subprocess.run(
        [sys.executable, "-m", "agent.protocol.descriptor"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(printed.stdout) == snapshot()


def test_new_messages_fields_and_enum_values_are_allowed(released):
    grown = copy.deepcopy(released)
    grown["messages"][HELLO]["99"] = {
        "name": "gpu_driver_notes",
        "type": "TYPE_STRING",
        "type_name": "",
        "label": "LABEL_OPTIONAL",
        "oneof": "",
    }
    grown["messages"][".janction.agent.v1.Pause"] = {}
    grown["enums"][STATE]["7"] = "PLACEMENT_STATE_PAUSED"
    grown["services"][GATEWAY]["Report"] = {"input": "x", "output": "y", "client_streaming": False}
    assert breaking_changes(released, grown) == []


def _field(description: dict, message: str, name: str) -> str:
    return next(number for number, field in description["messages"][message].items() if field["name"] == name)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["messages"].pop(USAGE), "message .janction.agent.v1.UsageReport was removed"),
        (
            lambda d: d["messages"][USAGE].pop(_field(d, USAGE, "signature")),
            "UsageReport field 7 (signature) was removed or renumbered",
        ),
        (
            lambda d: d["messages"][USAGE].__setitem__("70", d["messages"][USAGE].pop("7")),
            "UsageReport field 7 (signature) was removed or renumbered",
        ),
        (
            lambda d: d["messages"][USAGE]["6"].__setitem__("type", "TYPE_UINT32"),
            "UsageReport field 6 (vgpu_milliseconds) changed: type 'TYPE_UINT64' -> 'TYPE_UINT32'",
        ),
        (
            lambda d: d["messages"][HELLO]["1"].__setitem__("name", "version"),
            "Hello field 1 (agent_version) changed: name 'agent_version' -> 'version'",
        ),
        (
            lambda d: d["messages"][HELLO]["4"].__setitem__("label", "LABEL_OPTIONAL"),
            "Hello field 4 (gpus) changed: label 'LABEL_REPEATED' -> 'LABEL_OPTIONAL'",
        ),
        (lambda d: d["enums"][STATE].pop("6"), "PlacementState value 6 (PLACEMENT_STATE_LOST) was removed"),
        (
            lambda d: d["services"][GATEWAY]["Connect"].__setitem__("server_streaming", False),
            "AgentGateway.Connect was removed or its signature changed",
        ),
    ],
    ids=["message-removed", "field-removed", "field-renumbered", "retyped", "renamed", "relabelled", "enum", "rpc"],
)
def test_every_breaking_change_is_named(released, change, expected):
    broken = copy.deepcopy(released)
    change(broken)
    problems = breaking_changes(released, broken)
    assert len(problems) == 1 and expected in problems[0], problems
