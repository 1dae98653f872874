"""Command-line flags of `python -m agent`, validated into an AgentConfig."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from agent import __version__
from agent.identity import load_certificate_pem
from agent.nvml.fake import FAULTS, FakeGpuSpecError, GpuModel, known_model_names, parse_fake_gpu_spec
from agent.pinning import parse_fingerprint
from agent.runtime import RUNTIME_NAMES
from agent.runtime.disk import DEFAULT_IMAGE_DISK_QUOTA_BYTES
from agent.slicing import Slicing, SlicingError, parse_slicing
from agent.state import StateStore
from agent.usage import DEFAULT_INTERVAL_SECONDS

ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})$")
TOKEN_ENV = "JANCTION_ENROLL_TOKEN"  # noqa: S105 - the variable's name, not a token
SIZE = re.compile(r"^(?P<number>\d{1,15})\s*(?P<unit>|B|KiB|MiB|GiB|TiB)$")
SIZE_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}
MIN_IMAGE_DISK_QUOTA = 1024**2
MAX_IMAGE_DISK_QUOTA = 1024**5


@dataclass(frozen=True)
class AgentConfig:
    """Validated settings of one agent process."""

    gateway: str
    state_dir: Path
    enroll_token: str
    fake_gpus: list[GpuModel] | None
    runtime: str
    slicing: Slicing
    usage_interval: int
    heartbeat_interval: int
    ca_cert: bytes | None
    docker_socket: str | None
    oci_runtime: str | None
    log_level: str
    ca_fingerprint: bytes | None = None  # SHA-256 of the gateway's CA certificate (--ca-fingerprint)
    image_disk_quota: int = DEFAULT_IMAGE_DISK_QUOTA_BYTES  # bytes the agent's images and containers may take
    fake_gpu_processes: Path | None = None  # with --fake-gpus: a file of "PID[:GPU]" the fake GPUs list
    fake_gpu_fault: str | None = None  # with --fake-gpus: a test fault (agent.nvml.fake.FAULTS)
    allow_egress: bool = False  # rentals that ask for internet egress may run here (podman only)
    overlay: bool = False  # join the platform's WireGuard overlay and run segments (docs/overlay.md)
    overlay_prefix: str = "jo"  # names of every interface and namespace the overlay makes start with it


def gateway_address(value: str) -> str:
    """Return a validated HOST:PORT."""
    match = ADDRESS.match(value.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT with a port from 1 to 65535, got {value!r}")
    return value.strip()


def _bounded_int(low: int, high: int):
    def parse(value: str) -> int:
        if not value.strip().isdigit() or not low <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {value!r}")
        return int(value)

    return parse


def disk_size(value: str) -> int:
    """Return a size such as 50GiB, 512MiB or 1073741824 (bytes) in bytes, from 1 MiB to 1 PiB."""
    match = SIZE.match(value.strip())
    size = int(match["number"]) * SIZE_UNITS[match["unit"]] if match else 0
    if not MIN_IMAGE_DISK_QUOTA <= size <= MAX_IMAGE_DISK_QUOTA:
        raise argparse.ArgumentTypeError(
            f"expected a size from 1MiB to 1024TiB such as 50GiB, 512MiB or a number of bytes, got {value!r}"
        )
    return size


def _fake_gpus(value: str) -> list[GpuModel]:
    try:
        return parse_fake_gpu_spec(value)
    except FakeGpuSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _slicing(value: str) -> Slicing:
    try:
        return parse_slicing(value)
    except SlicingError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _certificate(value: str) -> bytes:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a file")
    data = path.read_bytes()
    try:
        load_certificate_pem(data)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value}: {exc}") from exc
    return data


def _fingerprint(value: str) -> bytes:
    try:
        return parse_fingerprint(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m agent",
        description="Janction provider agent: offers this host's GPUs as vGPUs and runs placements.",
    )
    parser.add_argument("--version", action="version", version=f"janction-agent {__version__}")
    parser.add_argument("--gateway", required=True, type=gateway_address, help="gateway address, HOST:PORT")
    parser.add_argument("--state-dir", required=True, type=Path, help="directory for the node key and state")
    parser.add_argument(
        "--enroll-token",
        default=os.environ.get(TOKEN_ENV, ""),
        help=f"one-time enrollment token (or set {TOKEN_ENV}); needed until the node is enrolled",
    )
    parser.add_argument(
        "--fake-gpus",
        type=_fake_gpus,
        help=f'declare fake GPUs instead of using NVML, e.g. "RTX 4090:2,A100-80GB:1"; models: '
        f"{', '.join(known_model_names())}",
    )
    parser.add_argument(
        "--fake-gpu-processes",
        type=Path,
        help="with --fake-gpus: a file of PID[:GPU_INDEX] lines; the live processes among them are what the fake "
        "GPUs list as running on them (NVML's process lists), e.g. to show the owner using the GPU",
    )
    parser.add_argument(
        "--fake-gpu-fault",
        choices=FAULTS,
        help="with --fake-gpus, for tests: the fake GPUs are faulty inside the container; 'model': the container "
        "sees a cheaper model than the node declares, 'memory': half the declared memory (verification "
        "challenges fail on it)",
    )
    parser.add_argument("--runtime", choices=RUNTIME_NAMES, default="podman", help="how to run workloads")
    parser.add_argument(
        "--slices", type=_slicing, default=1, help="vGPUs per GPU: 1, 2 or 4, or a MIG profile such as 1g.10gb"
    )
    parser.add_argument(
        "--usage-interval",
        type=_bounded_int(1, 3600),
        default=DEFAULT_INTERVAL_SECONDS,
        help="seconds between usage reports",
    )
    parser.add_argument("--heartbeat-interval", type=_bounded_int(1, 300), default=5, help="seconds between heartbeats")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--ca-cert", type=_certificate, help="PEM CA that signed the gateway's TLS certificate")
    trust.add_argument(
        "--ca-fingerprint",
        type=_fingerprint,
        help="sha256:<hex> of the platform CA (from the provider page's command): trust only the CA with this "
        "fingerprint among those the gateway presents",
    )
    parser.add_argument("--docker-socket", help="Docker Engine socket (with --runtime docker)")
    parser.add_argument(
        "--image-disk-quota",
        type=disk_size,
        default=DEFAULT_IMAGE_DISK_QUOTA_BYTES,
        help="disk the agent's images and container layers may take (podman and docker), e.g. 50GiB; the agent "
        "removes its least recently used unused images to make room and refuses starts that cannot fit "
        f"(default {DEFAULT_IMAGE_DISK_QUOTA_BYTES // 1024**3}GiB)",
    )
    parser.add_argument("--oci-runtime", default="runc", help="OCI runtime podman uses (with --runtime podman)")
    parser.add_argument(
        "--overlay",
        action="store_true",
        help="join the platform's WireGuard overlay so multi-node rentals get private VxLAN segments "
        "(needs root or CAP_NET_ADMIN, wireguard-go or kernel WireGuard; checked at start)",
    )
    parser.add_argument(
        "--overlay-prefix",
        default="jo",
        help="prefix (2-5 lower-case letters/digits) of the overlay's interfaces and namespaces; "
        "leftovers with it are removed at start",
    )
    parser.add_argument(
        "--allow-egress",
        action="store_true",
        help="let rentals that ask for it reach the internet (podman only; never this host's services or its LAN, "
        "which an nftables table blocks); without it no workload has any network",
    )
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO")
    return parser


def parse_config(argv: list[str] | None = None) -> AgentConfig:
    """Parse and validate the flags; print a message and exit with status 2 on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    state_dir: Path = args.state_dir
    if state_dir.exists() and not state_dir.is_dir():
        parser.error(f"--state-dir: {state_dir} exists and is not a directory")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--state-dir: cannot create {state_dir}: {exc.strerror}")
    if not os.access(state_dir, os.W_OK | os.X_OK):
        parser.error(f"--state-dir: {state_dir} is not writable")
    if not StateStore(state_dir).enrolled and not args.enroll_token.strip():
        parser.error("this node is not enrolled yet: pass --enroll-token with the token from the provider dashboard")
    if args.fake_gpu_processes is not None and args.fake_gpus is None:
        parser.error("--fake-gpu-processes only applies to --fake-gpus")
    if args.fake_gpu_fault is not None and args.fake_gpus is None:
        parser.error("--fake-gpu-fault only applies to --fake-gpus")
    if not re.match(r"^[a-z][a-z0-9]{1,4}$", args.overlay_prefix):
        parser.error("--overlay-prefix: 2 to 5 lower-case letters and digits, starting with a letter")
    if args.overlay and args.runtime != "podman":
        parser.error("--overlay needs --runtime podman (the container joins a prepared network namespace)")
    if args.docker_socket and args.runtime != "docker":
        parser.error("--docker-socket only applies to --runtime docker")
    if args.allow_egress and args.runtime != "podman":
        parser.error("--allow-egress only applies to --runtime podman (the others give workloads no network)")
    return AgentConfig(
        gateway=args.gateway,
        state_dir=state_dir,
        enroll_token=args.enroll_token.strip(),
        fake_gpus=args.fake_gpus,
        runtime=args.runtime,
        slicing=args.slices,
        usage_interval=args.usage_interval,
        heartbeat_interval=args.heartbeat_interval,
        ca_cert=args.ca_cert,
        docker_socket=args.docker_socket,
        oci_runtime=args.oci_runtime or None,
        log_level=args.log_level,
        ca_fingerprint=args.ca_fingerprint,
        image_disk_quota=args.image_disk_quota,
        fake_gpu_processes=args.fake_gpu_processes,
        fake_gpu_fault=args.fake_gpu_fault,
        allow_egress=args.allow_egress,
        overlay=args.overlay,
        overlay_prefix=args.overlay_prefix,
    )
