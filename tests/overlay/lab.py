"""Hosts made of network namespaces on this machine, for the overlay's tests and benchmark (no Django here).

A lab is a private /24 on a bridge in the root namespace (the "internet"), and one namespace per host
with a veth on it. Every name starts with the lab's random prefix, and `destroy` removes exactly what
`create` made: other people's namespaces, links and processes are never touched.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path


def sh(*argv: str, netns: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command (inside a lab host's namespace when netns is given)."""
    command = ["nsenter", f"--net=/run/netns/{netns}", *argv] if netns else list(argv)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-600:]}")
    return result


def missing_prerequisites() -> list[str]:
    """Return what this machine lacks for a lab, in words (the tests fail with it, never skip)."""
    missing = [] if os.geteuid() == 0 else ["root (network namespaces, links and nftables)"]
    for binary, package in (
        ("ip", "iproute2"), ("nsenter", "util-linux"), ("wg", "wireguard-tools"), ("nft", "nftables"),
        ("wireguard-go", "wireguard-go"), ("podman", "podman"), ("busybox", "busybox-static"),
    ):  # fmt: skip
        if shutil.which(binary) is None:
            missing.append(f"{binary} (apt-get install {package}, or bash scripts/install-system-deps.sh)")
    return missing


@dataclass
class Lab:
    prefix: str = field(default_factory=lambda: "o" + uuid.uuid4().hex[:3])
    subnet: int = field(default_factory=lambda: random.randint(0, 255))
    hosts: dict[str, str] = field(default_factory=dict)  # role -> netns name
    addresses: dict[str, str] = field(default_factory=dict)  # role -> address on the lab bridge
    pids: list[int] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway_address(self) -> str:
        """The root namespace's address on the lab bridge (where the platform listens)."""
        return f"172.29.{self.subnet}.1"

    def create(self, roles: list[str]) -> Lab:
        # Another run on this machine may hold a prefix or a subnet: pick ones nobody uses.
        taken = sh("ip", "-o", "-4", "addr", "show").stdout
        while f"172.29.{self.subnet}." in taken:
            self.subnet = random.randint(0, 255)
        while any(Path("/run/netns").glob(f"{self.prefix}*")) or Path(f"/sys/class/net/{self.bridge}").exists():
            self.prefix = "o" + uuid.uuid4().hex[:3]
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway_address}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for number, role in enumerate(roles, start=2):
            netns = f"{self.prefix}-{role}"
            sh("ip", "netns", "add", netns)
            self.hosts[role] = netns
            outside = f"{self.prefix}{role}0"
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", "up0", "netns", netns)
            sh("ip", "link", "set", outside, "master", self.bridge, "up")
            address = f"172.29.{self.subnet}.{number}"
            self.addresses[role] = address
            sh("ip", "addr", "add", f"{address}/24", "dev", "up0", netns=netns)
            sh("ip", "link", "set", "up0", "up", netns=netns)
            sh("ip", "link", "set", "lo", "up", netns=netns)
        return self

    def spawn(self, role: str, argv: list[str], *, log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start a process inside a host (its own session, so killing it never reaches the test)."""
        with log.open("ab") as handle:
            process = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.hosts[role]}", *argv],
                stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        self.pids.append(process.pid)
        return process

    def netns_path(self, role: str) -> str:
        return f"/run/netns/{self.hosts[role]}"

    def links(self, role: str, prefix: str) -> list[str]:
        """Return the names of a host's links that start with prefix."""
        output = sh("ip", "-o", "link", "show", netns=self.hosts[role]).stdout
        names = [line.split(": ")[1].split("@")[0] for line in output.splitlines() if ": " in line]
        return [name for name in names if name.startswith(prefix)]

    def destroy(self) -> None:
        """Remove exactly what this lab made (processes, namespaces, the bridge, wireguard sockets)."""
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    argv = (proc / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if argv[0].endswith(b"wireguard-go") and any(a.startswith(self.prefix.encode()) for a in argv[1:]):
                    try:
                        os.kill(int(proc.name), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for netns in self.hosts.values():
            sh("ip", "netns", "del", netns, check=False)
        # The agents' container namespaces: their names start with the agents' prefixes, i.e. with ours.
        for path in Path("/run/netns").glob(f"{self.prefix}*"):
            sh("ip", "netns", "del", path.name, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        for role in self.hosts:
            sh("ip", "link", "del", f"{self.prefix}{role}0", check=False)
        for sock in Path("/var/run/wireguard").glob(f"{self.prefix}*.sock"):
            sock.unlink(missing_ok=True)
