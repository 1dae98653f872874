"""The bubblewrap sandbox runtime."""

from __future__ import annotations

import os

import pytest

from agent.runtime.base import PlacementSpec, WorkloadState
from agent.runtime.sandbox import SandboxRuntime
from agent.slicing import ContainerGpuSettings
from tests.agent.conftest import REPO, requires_bwrap
from tests.agent.support import Recorder

pytestmark = requires_bwrap

GPU = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-fake"}, ("GPU-fake",), fake=True, uses_mps=False)


def _run(runtime: SandboxRuntime, script: str, **fields) -> Recorder:
    events = Recorder()
    spec = PlacementSpec("sb-1", "recorded/only:1", ("sh", "-c", script), fields.pop("env", {}), GPU, **fields)
    runtime.start(spec, events)
    events.wait_finished()
    return events


def test_runs_a_command_with_logs_and_exit_code():
    events = _run(SandboxRuntime(), "echo hello; echo oops >&2; exit 4")
    assert [c.state for c in events.changes] == [WorkloadState.RUNNING, WorkloadState.EXITED]
    assert events.changes[-1].exit_code == 4
    assert events.texts("stdout") == ["hello"] and events.texts("stderr") == ["oops"]


def test_sandbox_is_isolated(tmp_path):
    secret_dir = tmp_path / "state"
    secret_dir.mkdir()
    (secret_dir / "node.key").write_text("secret")
    secret_dir.chmod(0o755)
    probe = f"""
id -u
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '
touch /probe 2>/dev/null && echo root-writable || echo root-read-only
touch /tmp/probe && echo tmp-writable
cat {secret_dir}/node.key 2>/dev/null || echo key-hidden
ls /home | wc -l
ls {REPO / "agent"} 2>/dev/null | wc -l
echo "env $NVIDIA_VISIBLE_DEVICES $GREETING ${{JANCTION_SECRET:-unset}}"
"""
    os.environ["JANCTION_SECRET"] = "leak"
    try:
        runtime = SandboxRuntime(hidden_paths=(str(secret_dir), str(REPO / "agent")))
        events = _run(runtime, probe, env={"GREETING": "hi"})
    finally:
        del os.environ["JANCTION_SECRET"]
    assert events.changes[-1].exit_code == 0, events.texts()
    assert events.texts("stdout") == [
        "65534",
        "lo",
        "root-read-only",
        "tmp-writable",
        "key-hidden",
        "0",
        "0",
        "env GPU-fake hi unset",
    ]


def test_memory_limit_caps_the_address_space():
    events = _run(SandboxRuntime(), "ulimit -v", memory_limit_bytes=256 * 1024 * 1024)
    assert events.texts("stdout") == [str(256 * 1024)]


def test_stop_kills_the_sandbox():
    runtime = SandboxRuntime()
    events = Recorder()
    runtime.start(PlacementSpec("sb-stop", "img", ("sh", "-c", "echo up; sleep 600"), {}, GPU), events)
    events.wait(lambda r: "up" in r.texts())
    assert [w.placement_id for w in runtime.list_workloads()] == ["sb-stop"]
    runtime.stop("sb-stop", grace_seconds=1)
    finished = events.wait_finished(timeout=10)
    assert finished.state == WorkloadState.EXITED and finished.exit_code in (137, 143)
    assert runtime.list_workloads() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"network_allowed": True}, "no network"), ({"command": ()}, "default command")],
)
def test_what_the_sandbox_cannot_do_fails_clearly(fields, message):
    events = Recorder()
    spec = PlacementSpec("sb-2", "img", fields.pop("command", ("true",)), {}, GPU, **fields)
    SandboxRuntime().start(spec, events)
    finished = events.wait_finished()
    assert finished.state == WorkloadState.FAILED and message in finished.message


def test_sandboxes_do_not_survive_the_agent():
    runtime = SandboxRuntime()
    assert not runtime.supports_network
    assert runtime.list_workloads() == []
    events = Recorder()
    runtime.attach("gone", events)
    assert events.changes[0].state == WorkloadState.LOST


def test_a_fake_gpu_shows_a_stand_in_nvidia_smi_in_the_sandbox_and_it_is_removed_after():
    gpu = ContainerGpuSettings(
        {"NVIDIA_VISIBLE_DEVICES": "GPU-f"}, ("GPU-f",), True, False, nvidia_smi_lines=("Tesla T4, 15360",)
    )
    events = Recorder()
    script = "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits; ls -d /tmp/.janction-gpu"
    SandboxRuntime().start(PlacementSpec("sb-smi", "img:1", ("sh", "-c", script), {}, gpu), events)
    events.wait_finished()
    assert events.changes[-1].exit_code == 0, events.texts()
    assert events.texts("stdout") == ["Tesla T4, 15360", "/tmp/.janction-gpu"]
    assert _run(SandboxRuntime(), "command -v nvidia-smi || echo none").texts("stdout") == ["none"]  # no lines, none


def test_a_fake_gpu_description_cannot_smuggle_shell():
    from agent.runtime.base import write_fake_nvidia_smi

    with pytest.raises(ValueError, match="unexpected character"):
        write_fake_nvidia_smi("/nonexistent", ("x'; rm -rf /; echo '",))
