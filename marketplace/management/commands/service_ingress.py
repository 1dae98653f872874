"""`manage.py service_ingress`: serve the service endpoint (/svc/...) and the agents' tunnels until SIGTERM."""

import argparse
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from marketplace.svc.ingress.server import Ingress


class Command(BaseCommand):
    help = "Serve /svc/<service>/<port>/... over HTTP on --listen, and agents' tunnels (mutual TLS) on --tunnel-listen."

    def add_arguments(self, parser):
        parser.add_argument("--listen", default=settings.SERVICE_INGRESS_LISTEN, help="HOST:PORT for HTTP")
        parser.add_argument(
            "--tunnel-listen", default=settings.SERVICE_INGRESS_TUNNEL_LISTEN, help="HOST:PORT for agents' tunnels"
        )
        parser.add_argument(
            "--advertise", default="", help="HOST:PORT agents dial for tunnels (default: the tunnel listen address)"
        )
        parser.add_argument(
            "--overlay",
            action=argparse.BooleanOptionalAction,
            default=settings.SERVICE_INGRESS_OVERLAY,
            help="reach containers on service segments over the overlay (run it on the hub's host), else the tunnel",
        )
        parser.add_argument(
            "--overlay-netns",
            default=settings.SERVICE_INGRESS_OVERLAY_NETNS,
            help="the hub's network namespace (a /run/netns path) when the hub runs with --netns",
        )

    def handle(self, *args, listen, tunnel_listen, advertise, overlay, overlay_netns, **options):
        ingress = Ingress(
            listen=listen,
            tunnel_listen=tunnel_listen,
            advertise=advertise,
            overlay=overlay,
            overlay_netns=overlay_netns,
        )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        ingress.start()
        self.stdout.write(
            f"service ingress: HTTP on port {ingress.port}, tunnels on port {ingress.tunnel_port} "
            f"(agents dial {ingress.tunnel_address})",
            ending="\n",
        )
        self.stdout.flush()
        stop.wait()
        self.stdout.write("stopping the service ingress")
        ingress.stop()
