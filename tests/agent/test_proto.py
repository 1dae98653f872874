"""The committed stubs match the proto, and the stubs import as a package."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.agent.conftest import REPO


def test_committed_stubs_are_regenerated_identically(tmp_path):
    out = tmp_path / "gen"
    subprocess.run(
        [str(REPO / "scripts" / "gen_proto.sh")],
        cwd=REPO,
        env={**os.environ, "OUT": str(out), "PYTHON": sys.executable},
        check=True,
        capture_output=True,
    )
    committed = REPO / "agent" / "protocol" / "gen"
    generated = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    assert generated == sorted(
        path.relative_to(committed)
        for path in committed.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    for relative in generated:
        assert (out / relative).read_bytes() == (committed / relative).read_bytes(), f"{relative} is stale"


def test_stubs_import_from_the_agent_package():
    from agent.protocol.gen.janction.agent.v1 import agent_pb2, agent_pb2_grpc

    assert agent_pb2.DESCRIPTOR.package == "janction.agent.v1"
    assert agent_pb2.DESCRIPTOR.name == "janction/agent/v1/agent.proto"
    assert set(agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].methods_by_name) == {"Enroll", "Connect"}
    assert hasattr(agent_pb2_grpc, "AgentGatewayServicer")
