"""Flag validation of `python -m agent`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.config import parse_config
from agent.state import StateStore
from tests.agent.conftest import REPO
from tests.agent.pki import make_pki


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def _base(tmp_path) -> list[str]:
    return ["--gateway", "gw.example:7000", "--state-dir", str(tmp_path / "state"), "--enroll-token", "t"]


def test_a_complete_command_line_parses(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(make_pki().ca_pem)
    config = parse_config(
        [*_base(tmp_path), "--fake-gpus", "RTX 4090:2", "--runtime", "sandbox", "--slices", "4",
         "--usage-interval", "30", "--ca-cert", str(ca)]
    )  # fmt: skip
    assert config.gateway == "gw.example:7000"
    assert [model.key for model in config.fake_gpus] == ["RTX 4090", "RTX 4090"]
    assert (config.runtime, config.slicing, config.usage_interval) == ("sandbox", 4, 30)
    assert config.ca_cert == ca.read_bytes()
    assert (tmp_path / "state").is_dir()


def test_defaults(tmp_path):
    config = parse_config(_base(tmp_path))
    assert (config.runtime, config.slicing, config.usage_interval, config.fake_gpus) == ("podman", 1, 10, None)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gateway", "no-port"], "expected HOST:PORT"),
        (["--gateway", "host:70000"], "port from 1 to 65535"),
        (["--fake-gpus", "GTX 9999"], "known models: T4"),
        (["--runtime", "lxc"], "invalid choice: 'lxc'"),
        (["--slices", "3"], "1, 2 or 4"),
        (["--usage-interval", "0"], "from 1 to 3600"),
        (["--usage-interval", "ten"], "from 1 to 3600"),
        (["--heartbeat-interval", "999"], "from 1 to 300"),
        (["--ca-cert", "/nonexistent.pem"], "is not a file"),
        (["--docker-socket", "/x.sock"], "only applies to --runtime docker"),
        (["--fake-gpu-fault", "model"], "--fake-gpu-fault only applies to --fake-gpus"),
        (["--fake-gpus", "L4", "--fake-gpu-fault", "melted"], "invalid choice: 'melted'"),
        (["--overlay", "--runtime", "sandbox"], "--overlay needs --runtime podman"),
        (["--overlay-prefix", "x"], "--overlay-prefix: 2 to 5"),
        (["--overlay-prefix", "ab;rm"], "--overlay-prefix: 2 to 5"),
        (["--overlay-prefix", "abcdef"], "--overlay-prefix: 2 to 5"),
    ],
)
def test_bad_flags_exit_2_with_a_message(tmp_path, capsys, extra, message):
    assert message in _error(capsys, [*_base(tmp_path), *extra])


def test_a_ca_cert_that_is_not_a_certificate_is_refused(tmp_path, capsys):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("hello")
    assert "not a PEM certificate" in _error(capsys, [*_base(tmp_path), "--ca-cert", str(bogus)])


def test_state_dir_must_be_a_directory(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("")
    argv = ["--gateway", "g:1", "--state-dir", str(file), "--enroll-token", "t"]
    assert "is not a directory" in _error(capsys, argv)


def test_an_unenrolled_node_needs_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JANCTION_ENROLL_TOKEN", raising=False)
    argv = ["--gateway", "g:1", "--state-dir", str(tmp_path)]
    assert "not enrolled yet: pass --enroll-token" in _error(capsys, argv)


def test_an_enrolled_node_needs_no_token(tmp_path):
    store = StateStore(tmp_path)
    for path in (store.key_path, store.cert_path, store.ca_path):
        store.write_secret(path, b"x")
    assert parse_config(["--gateway", "g:1", "--state-dir", str(tmp_path)]).enroll_token == ""


def test_python_dash_m_agent_exits_2_on_bad_input(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--gateway", "g:1", "--state-dir", str(tmp_path), "--slices", "8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--slices" in result.stderr and "1, 2 or 4" in result.stderr


def test_image_disk_quota_defaults_to_100_gib_and_takes_units(tmp_path, capsys):
    assert parse_config(_base(tmp_path)).image_disk_quota == 100 * 1024**3
    assert parse_config([*_base(tmp_path), "--image-disk-quota", "512MiB"]).image_disk_quota == 512 * 1024**2
    assert "--image-disk-quota: expected a size" in _error(capsys, [*_base(tmp_path), "--image-disk-quota", "10GB"])
