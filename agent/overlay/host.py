"""The agent's overlay: the underlay link, the segments of its placements, the state file and the cleanup.

`overlay.json` in the state directory records what this agent made (the wireguard-go pid, the last
underlay config, each placement's segment), rewritten atomically before each change takes effect, so an
agent killed with `kill -9` finds at its next start what to remove: every link whose name starts with
its prefix, and the namespaces the file names. Placements still alive keep their namespace (their
container holds it) and get their segment rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from agent.overlay import capabilities, keys
from agent.overlay.direct import DirectPeers, host_ruleset, host_table
from agent.overlay.net import Net, NetError, netns_delete
from agent.overlay.segments import PlacementNames, Segments, SegmentSpec
from agent.overlay.underlay import Underlay, UnderlayConfig, stop_wireguard_go, tune_socket_buffers

log = logging.getLogger(__name__)

PREFIX = re.compile(r"^[a-z][a-z0-9]{1,4}$")
STATE_FILE = "overlay.json"
KEY_FILE = "wireguard.key"


class OverlayUnavailable(RuntimeError):
    """The host cannot run the overlay; the message says what is missing."""


class OverlayHost:
    """Everything overlay on one host, for the agent session."""

    def __init__(self, *, state_dir: Path, prefix: str, net: Net | None = None) -> None:
        if not PREFIX.match(prefix):
            raise ValueError("--overlay-prefix: 2 to 5 lower-case letters and digits, starting with a letter")
        self._state_dir = state_dir
        self._prefix = prefix
        self._net = net or Net()
        self._lock = threading.RLock()
        self._path = state_dir / STATE_FILE
        self._state = self._load()
        self.capabilities = capabilities.check(f"{prefix}k{os.getpid() % 10000}")
        if not self.capabilities.ok:
            raise OverlayUnavailable(self.capabilities.describe())
        self.public_key = keys.load_or_create(state_dir / KEY_FILE)
        self.underlay = Underlay(
            prefix=prefix, key_path=state_dir / KEY_FILE, kernel=self.capabilities.kernel_wireguard, net=self._net
        )
        self.segments = Segments(prefix=prefix, net=self._net)
        self.direct = DirectPeers(net=self._net, interface=self.underlay.name)
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self._direct_thread: threading.Thread | None = None
        self._ruleset = ""
        self.rtt_us = 0

    # -- state file ------------------------------------------------------------------------------

    def _load(self) -> dict:
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            data = {}
        return {
            "wireguard_go_pid": int(data.get("wireguard_go_pid") or 0),
            "underlay": data.get("underlay"),
            "placements": dict(data.get("placements") or {}),
            "listen_port": int(data.get("listen_port") or 0),
        }

    def _save(self) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self._state_dir, prefix=".overlay-")
        with os.fdopen(descriptor, "w") as handle:
            json.dump(self._state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)

    # -- start-up --------------------------------------------------------------------------------

    def cleanup(self, *, keep: set[str]) -> list[str]:
        """Remove what an earlier run left, except the namespaces of placements in keep; return what went."""
        removed = []
        with self._lock:
            kept = {pid: seg for pid, seg in self._state["placements"].items() if pid in keep}
            kept_veths = {PlacementNames.of(self._prefix, pid).veth for pid in kept}
            for link in self._net.links(self._prefix):
                if link.name in kept_veths or link.name == "lo":
                    continue
                if self._net.link_delete(link.name):
                    removed.append(link.name)
            stop_wireguard_go(self.underlay.name, self._state["wireguard_go_pid"])
            self._net.run("nft", "delete", "table", "inet", host_table(self._prefix), check=False)
            for placement_id in set(self._state["placements"]) - set(kept):
                names = PlacementNames.of(self._prefix, placement_id)
                if netns_delete(names.netns):
                    removed.append(names.netns)
            self._state["placements"] = kept
            self._state["wireguard_go_pid"] = 0
            self._save()
        if removed:
            log.info("overlay: removed leftovers of an earlier run: %s", ", ".join(sorted(removed)))
        return removed

    def resume(self) -> None:
        """Bring the last known underlay back and rebuild the kept placements' segments."""
        stored = self._state.get("underlay")
        if stored:
            try:
                self.configure(UnderlayConfig(**stored))
            except (NetError, ValueError, TypeError) as exc:
                log.warning("overlay: could not bring the stored underlay back: %s", exc)

    # -- control messages ------------------------------------------------------------------------

    def configure(self, config: UnderlayConfig) -> None:
        """Bring the underlay up (or change it) and rebuild every known segment on it."""
        with self._lock:
            config = config.validated()
            self._state["underlay"] = config.to_json()
            self._save()
            created = self.underlay.wireguard_go_pid == 0
            self.underlay.up(config)
            self._state["wireguard_go_pid"] = self.underlay.wireguard_go_pid or self._state["wireguard_go_pid"]
            self._save()
            if created:
                self._keep_listen_port()
            if created and self.underlay.wireguard_go_pid:
                # wireguard-go opens its sockets when the link goes up, on its own time: wait for them (1 s at most).
                deadline = time.monotonic() + 1.0
                while not tune_socket_buffers(self.underlay.wireguard_go_pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
            # `up` leaves the hub as the only peer: direct paths start over.
            self.direct.forget()
            for placement_id, data in list(self._state["placements"].items()):
                try:
                    self._attach(placement_id, SegmentSpec.from_json(data))
                except (NetError, ValueError) as exc:
                    log.warning("overlay: could not rebuild the segment of %s: %s", placement_id, exc)
            self._paths_sync()
        if self._direct_thread is None:
            self._direct_thread = threading.Thread(target=self._direct_loop, name="overlay-direct", daemon=True)
            self._direct_thread.start()

    def _keep_listen_port(self) -> None:
        """Listen on the previous run's UDP port where it is free: hosts that knew this one's endpoint (their
        segment messages name it) still reach it directly after a restart. Record the port in use."""
        name, wanted = self.underlay.name, int(self._state.get("listen_port") or 0)
        if wanted and self._net.wg("set", name, "listen-port", str(wanted), check=False).returncode != 0:
            log.info("overlay: UDP port %d is taken; WireGuard listens on another (direct peers may fall back)", wanted)
        port = self._net.wg("show", name, "listen-port", check=False).stdout.strip()
        if port.isdigit() and int(port) != wanted:
            self._state["listen_port"] = int(port)
            self._save()

    def _paths_sync(self) -> None:
        """Apply the host's filter and direct peers for the placements it has now (under the lock)."""
        config = self.underlay.config
        if config is None:
            return
        specs = [SegmentSpec.from_json(data) for data in self._state["placements"].values()]
        ruleset = host_ruleset(
            prefix=self._prefix,
            interface=self.underlay.name,
            hub_address=config.hub_address,
            flows=[(host, spec.vni) for spec in specs for host in spec.remote_hosts],
        )
        if ruleset != self._ruleset:
            self._net.nft(ruleset)
            self._ruleset = ruleset
        peers = {peer[2]: peer for spec in specs for peer in spec.peers}
        self.direct.sync(
            peers.values(), hub_public_key=config.hub_public_key, keepalive_seconds=config.keepalive_seconds
        )
        if self.direct.trying:
            self._wake.set()

    def _direct_loop(self) -> None:
        """Watch direct handshakes: every 0.05 s while a trial runs, every 2 s otherwise.

        Both hosts promote a peer when they see the handshake; until the slower one has, the faster one's
        direct packets are dropped there (WireGuard takes a source only from the peer holding it): keep it short.
        """
        while not self._stopped.is_set():
            try:
                with self._lock:
                    if self.underlay.config is not None:
                        self.direct.poll()
                    trying = self.direct.trying
            except (NetError, ValueError) as exc:
                log.warning("overlay: direct paths: %s", exc)
                trying = False
            self._wake.wait(0.05 if trying else 2.0)
            self._wake.clear()

    def paths(self) -> dict[str, str]:
        """Return how this host reaches each other host of its segments: "direct", "relay" or "trying"."""
        with self._lock:
            return self.direct.paths()

    @property
    def ready(self) -> bool:
        return self.underlay.config is not None

    def placement_up(self, placement_id: str, spec: SegmentSpec) -> str:
        """Put the placement on its segment; return the path of the network namespace for its container."""
        spec = spec.validated()
        with self._lock:
            if self.underlay.config is None:
                raise NetError("the overlay is not up yet (no configuration from the platform)")
            self._state["placements"][placement_id] = spec.to_json()
            self._save()
            names = self._attach(placement_id, spec)
            self._paths_sync()
        log.info("overlay: placement %s on VNI %d as %s", placement_id, spec.vni, spec.address)
        return f"/run/netns/{names.netns}"

    def _attach(self, placement_id: str, spec: SegmentSpec) -> PlacementNames:
        assert self.underlay.config is not None
        self.segments.ensure_segment(spec, local_address=self.underlay.config.address, underlay=self.underlay.name)
        return self.segments.attach(placement_id, spec)

    def placement_down(self, placement_id: str) -> None:
        """Take the placement off its segment; remove the segment when no other placement here uses it."""
        with self._lock:
            data = self._state["placements"].pop(placement_id, None)
            if data is None:
                return
            self._save()
            self.segments.detach(placement_id)
            vni = int(data["vni"])
            if not any(int(other["vni"]) == vni for other in self._state["placements"].values()):
                self.segments.remove_segment(vni)
            self._paths_sync()
        log.info("overlay: placement %s left VNI %d", placement_id, vni)

    def has_placement(self, placement_id: str) -> bool:
        with self._lock:
            return placement_id in self._state["placements"]

    def shutdown(self) -> None:
        """Take everything down (the agent stops on purpose)."""
        self._stopped.set()
        self._wake.set()
        with self._lock:
            for placement_id in list(self._state["placements"]):
                self.placement_down(placement_id)
            self._net.run("nft", "delete", "table", "inet", host_table(self._prefix), check=False)
            self._ruleset = ""
            self.underlay.down()
            self._state["wireguard_go_pid"] = 0
            self._save()

    # -- measurements ----------------------------------------------------------------------------

    def measure_rtt(self, timeout: float = 1.0) -> int:
        """Return the round-trip time to the hub over the overlay in microseconds (ICMP echo), 0 if none."""
        config = self.underlay.config
        if config is None:
            return 0
        self.rtt_us = icmp_rtt_us(config.hub_address, timeout=timeout)
        return self.rtt_us


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_rtt_us(address: str, *, timeout: float = 1.0) -> int:
    """Send one ICMP echo to address and return the round trip in microseconds, 0 without an answer."""
    identifier = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, identifier, 1)
    payload = b"janction-rtt"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), identifier, 1) + payload
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            start = time.monotonic()
            sock.sendto(packet, (address, 0))
            deadline = start + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                data, source = sock.recvfrom(2048)
                offset = (data[0] & 0x0F) * 4
                kind, _, _, reply_id, _ = struct.unpack("!BBHHH", data[offset : offset + 8])
                if source[0] == address and kind == 0 and reply_id == identifier:
                    return max(1, int((time.monotonic() - start) * 1_000_000))
    except OSError:
        return 0
    return 0


def rtt_loop(overlay: OverlayHost, *, interval: float) -> threading.Thread:
    """Measure the round trip to the hub every interval seconds in a daemon thread (for placement ties)."""

    def measure() -> None:
        while True:
            overlay.measure_rtt()
            time.sleep(interval)

    thread = threading.Thread(target=measure, name="overlay-rtt", daemon=True)
    thread.start()
    return thread
