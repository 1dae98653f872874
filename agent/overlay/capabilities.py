"""What the host must offer for the overlay, checked at start so the agent says clearly what is missing."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from agent.overlay.net import Net

CAP_NET_ADMIN = 12


@dataclass
class Capabilities:
    """The result of `check()`: what is there, and in words what is missing."""

    kernel_wireguard: bool = False
    wireguard_go: bool = False
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether the overlay can run here."""
        return not self.missing

    def describe(self) -> str:
        """Return one line for the log or the error message."""
        if self.ok:
            return "overlay ready: WireGuard via " + ("the kernel" if self.kernel_wireguard else "wireguard-go")
        return "the overlay cannot run on this host: " + "; ".join(self.missing)


def _has_cap_net_admin() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << CAP_NET_ADMIN))
    except OSError:
        pass
    return os.geteuid() == 0


def _module_available(name: str) -> bool:
    """Return whether a kernel module is loaded, built in, or present to load."""
    if Path(f"/sys/module/{name}").exists():
        return True
    release = os.uname().release
    modules = Path(f"/lib/modules/{release}")
    for listing in ("modules.builtin", "modules.dep"):
        try:
            if f"/{name}.ko" in (modules / listing).read_text():
                return True
        except OSError:
            continue
    return False


def _probe_links(name: str) -> list[str]:
    """Create and delete one link of each kind the overlay needs; return what the kernel refused."""
    net = Net()
    missing = []
    for kind, args in (
        # The highest VNI: the platform never allocates it, so no live segment holds it.
        ("vxlan", ["type", "vxlan", "id", "16777215", "dstport", "4789"]),
        ("bridge", ["type", "bridge"]),
        ("veth", ["type", "veth", "peer", "name", name[:-1] + "q"]),
    ):
        result = net.ip("link", "add", name, *args, check=False)
        if result.returncode != 0:
            missing.append(f"{kind} links ({result.stderr.strip()[-120:]}; modprobe {kind})")
        else:
            net.link_delete(name)
    return missing


def check(probe_name: str) -> Capabilities:
    """Return what the host supports for the overlay and what it lacks (probe_name: a free link name to try)."""
    caps = Capabilities()
    if not _has_cap_net_admin():
        caps.missing.append("CAP_NET_ADMIN (run the agent as root or grant it cap_net_admin)")
    for binary, package in (
        ("ip", "iproute2"),
        ("bridge", "iproute2"),
        ("wg", "wireguard-tools"),
        ("nsenter", "util-linux"),
        ("nft", "nftables"),  # the host's own filter of what arrives over the overlay (agent/overlay/direct.py)
    ):
        if shutil.which(binary) is None:
            caps.missing.append(f"the `{binary}` command (apt-get install {package})")
    if not caps.missing:
        caps.missing.extend(_probe_links(probe_name))
    caps.kernel_wireguard = _module_available("wireguard")
    caps.wireguard_go = shutil.which("wireguard-go") is not None
    if not (caps.kernel_wireguard or caps.wireguard_go):
        caps.missing.append("WireGuard: no kernel module and no wireguard-go binary (apt-get install wireguard-go)")
    if not Path("/dev/net/tun").exists() and not caps.kernel_wireguard:
        caps.missing.append("/dev/net/tun (wireguard-go needs the tun device)")
    return caps
