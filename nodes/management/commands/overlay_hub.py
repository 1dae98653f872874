"""`manage.py overlay_hub`: run the overlay's WireGuard hub and keep its peers and rules in line with the database."""

import signal
import threading
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from nodes.overlay_hub import HubError, HubRunner
from nodes.services import (
    overlay_endpoints_record,
    overlay_hub_register,
    overlay_hub_state,
    overlay_segments_release_ended,
)
from nodes.services.overlay import overlay_hub_address, overlay_network


class Command(BaseCommand):
    help = (
        "Run the overlay hub (docs/overlay.md): a WireGuard interface the agents dial, and an nftables table that "
        "forwards only the VxLAN flows of live segments. Rebuilt from the database at start and every --interval."
    )

    def add_arguments(self, parser):
        parser.add_argument("--endpoint", required=True, help="UDP HOST:PORT the agents dial (told to each agent)")
        parser.add_argument("--listen-port", type=int, default=51820, help="UDP port WireGuard listens on")
        parser.add_argument("--interface", default="jhub0", help="name of the hub's WireGuard interface")
        parser.add_argument("--key-file", type=Path, required=True, help="the hub's private key (made when absent)")
        parser.add_argument("--netns", help="run the interface in this network namespace (a /run/netns path)")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between syncs with the database")

    def handle(self, *args, endpoint, listen_port, interface, key_file, netns, interval, **options):
        if missing := HubRunner.missing():
            raise CommandError("the overlay hub cannot run here: missing " + "; ".join(missing))
        network = overlay_network()
        try:
            hub = HubRunner(
                interface=interface,
                key_file=key_file,
                listen_port=listen_port,
                address=overlay_hub_address(),
                prefix_length=network.prefixlen,
                netns=netns,
            )
            hub.start()
        except (HubError, ValueError, OSError) as exc:
            raise CommandError(f"the overlay hub did not start: {exc}") from exc
        overlay_hub_register(public_key=hub.public_key, endpoint=endpoint)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write(f"overlay hub {interface} on UDP {listen_port}, {hub.address}, endpoint {endpoint}")
        self.stdout.flush()
        try:
            while not stop.is_set():
                try:
                    overlay_segments_release_ended()
                    state = overlay_hub_state()
                    if hub.apply(peers=state.peers, flows=state.flows, services=state.services):
                        self.stdout.write(
                            f"overlay hub: {len(state.peers)} peers, {len(state.flows)} flows, "
                            f"{len(state.services)} service segments"
                        )
                        self.stdout.flush()
                    # Where each host's packets come from: its segment peers dial it there (direct paths).
                    overlay_endpoints_record(endpoints=hub.endpoints())
                except HubError as exc:
                    self.stderr.write(f"overlay hub: {exc}")
                stop.wait(interval)
        finally:
            hub.stop()
            self.stdout.write("overlay hub stopped")
