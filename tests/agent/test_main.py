"""`python -m agent` as a process, against the in-test gateway."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
import uuid

from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.runtime.base import container_name
from tests.agent.conftest import REPO, requires_bwrap, requires_podman
from tests.agent.gateway import ENROLL_TOKEN
from tests.agent.support import start_message


def _agent(gateway, state_dir, ca_path, *extra: str, runtime: str = "sandbox") -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "agent", "--gateway", f"localhost:{gateway.enroll_port}", "--state-dir",
            str(state_dir), "--ca-cert", str(ca_path), "--fake-gpus", "RTX 4090:1,H100-80GB:1", "--runtime",
            runtime, "--slices", "2", "--heartbeat-interval", "1", "--usage-interval", "1", *extra]  # fmt: skip
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    return output


@requires_bwrap
def test_the_agent_process_enrolls_serves_placements_and_restarts_as_the_same_node(tmp_path, gateway, pki):
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(pki.ca_pem)
    state_dir = tmp_path / "state"
    process = _agent(gateway, state_dir, ca_path, "--enroll-token", ENROLL_TOKEN)
    try:
        hello = gateway.wait_for(lambda m: m.WhichOneof("payload") == "hello", timeout=30).hello
        assert [vgpu.pool for vgpu in hello.vgpus] == ["ada-12g", "ada-12g", "hopper-40g", "hopper-40g"]
        assert all(gpu.fake for gpu in hello.gpus)
        gateway.send(start_message("p-main", ["sh", "-c", "echo from-main"], vgpus=("1:0",)))
        status = gateway.wait_for(
            lambda m: (
                m.WhichOneof("payload") == "placement_status" and m.placement_status.state == pb.PLACEMENT_STATE_EXITED
            )
        ).placement_status
        assert status.placement_id == "p-main" and status.exit_code == 0
        assert any("from-main" in chunk.lines for chunk in gateway.messages("log_chunk"))
    finally:
        output = _stop(process)
    assert "fake GPUs" in output

    gateway.clear()
    process = _agent(gateway, state_dir, ca_path)
    try:
        again = gateway.wait_for(lambda m: m.WhichOneof("payload") == "hello", timeout=30).hello
    finally:
        _stop(process)
    assert [gpu.uuid for gpu in again.gpus] == [gpu.uuid for gpu in hello.gpus]
    assert gateway.connections == 2


def test_the_agent_process_explains_a_missing_container_engine(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--gateway", "localhost:1", "--state-dir", str(tmp_path / "s"),
         "--enroll-token", "t", "--runtime", "docker", "--docker-socket", str(tmp_path / "missing.sock")],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no Docker socket" in result.stderr


@requires_podman
def test_a_crashed_agent_reattaches_to_its_podman_container_and_keeps_billing(tmp_path, gateway, pki, test_image):
    """The container outlives a killed agent; the restarted agent follows it to its end and bills the whole time.

    The workload waits for a file the test creates only once the second agent has re-attached, so it is still
    running then however slowly the agent restarts on a loaded machine (a fixed `sleep` raced the restart).
    """
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(pki.ca_pem)
    state_dir = tmp_path / "state"
    placement = f"p-crash-{uuid.uuid4().hex[:12]}"  # podman's containers are shared by everyone on the machine
    script = "echo one; until [ -e /tmp/release ]; do sleep 0.05; done; echo two"
    process = _agent(gateway, state_dir, ca_path, "--enroll-token", ENROLL_TOKEN, runtime="podman")
    try:
        gateway.wait_for(lambda m: m.WhichOneof("payload") == "hello", timeout=60)
        sent = time.monotonic()
        gateway.send(start_message(placement, ["sh", "-c", script], vgpus=("0:0",), image=test_image))
        gateway.wait_for(lambda m: m.WhichOneof("payload") == "log_chunk" and "one" in m.log_chunk.lines, 60)
        echoed = time.monotonic()  # the container ran from before this moment...
        gateway.wait_for(lambda m: m.WhichOneof("payload") == "usage_report", timeout=60)
    finally:
        process.kill()
        process.wait(timeout=10)

    process = _agent(gateway, state_dir, ca_path, runtime="podman")
    try:
        rehello = gateway.wait_for(lambda m: m.WhichOneof("payload") == "hello" and bool(m.hello.placements), 60).hello
        assert [p.placement_id for p in rehello.placements] == [placement]
        time.sleep(max(0.0, 4 - (time.monotonic() - echoed)))  # a run of 4 s at least, as billed below
        released = time.monotonic()  # ...to after this one,
        subprocess.run(
            ["podman", "--runtime", "runc", "exec", container_name(placement), "touch", "/tmp/release"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        exited = gateway.wait_for(
            lambda m: (
                m.WhichOneof("payload") == "placement_status" and m.placement_status.state == pb.PLACEMENT_STATE_EXITED
            ),
            timeout=60,
        ).placement_status
        ended = time.monotonic()  # ...and had ended by this one.
        assert exited.exit_code == 0
    finally:
        _stop(process)
    lines = {}
    for chunk in gateway.messages("log_chunk"):
        lines.update({chunk.seq + offset: text for offset, text in enumerate(chunk.lines)})
    assert sorted(lines) == list(range(1, len(lines) + 1))
    assert [text for _, text in sorted(lines.items())][-1] == "two" and "one" in lines.values()
    reports = {report.seq: report for report in gateway.messages("usage_report")}
    assert all(gateway.usage_verified)
    ordered = [reports[seq] for seq in sorted(reports)]
    assert sorted(reports) == list(range(1, len(reports) + 1))
    assert all(a.interval_end_ms == b.interval_start_ms for a, b in itertools.pairwise(ordered))
    # Billed: the whole time the container ran, the agent's downtime included, and never more than it ran.
    # (The exit time is podman's, which may round to the second.)
    billed_ms = ordered[-1].interval_end_ms - ordered[0].interval_start_ms
    assert (released - echoed) * 1000 - 1000 <= billed_ms <= (ended - sent) * 1000 + 1000, billed_ms
    containers = subprocess.run(
        ["podman", "ps", "--all", "--filter", f"label=io.janction.placement-id={placement}", "--quiet"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert containers.stdout.strip() == "", "the settled container is removed"
