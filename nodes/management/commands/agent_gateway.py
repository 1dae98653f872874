"""`manage.py agent_gateway`: serve the agent gateway until SIGTERM or SIGINT."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from nodes.gateway.server import Gateway, GatewayConfig


class Command(BaseCommand):
    help = "Serve the gRPC agent gateway: Connect over mutual TLS on --listen, Enroll over TLS on --enroll-listen."

    def add_arguments(self, parser):
        parser.add_argument(
            "--listen", default=settings.AGENT_GATEWAY_LISTEN, help="HOST:PORT for Connect (mutual TLS)"
        )
        parser.add_argument(
            "--enroll-listen",
            default=settings.AGENT_GATEWAY_ENROLL_LISTEN,
            help="HOST:PORT for Enroll and health checks (server TLS); agents are told this address",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=settings.AGENT_GATEWAY_STOP_GRACE_SECONDS,
            help="seconds open calls get to finish on SIGTERM/SIGINT",
        )

    def handle(self, *args, listen, enroll_listen, grace, **options):
        gateway = Gateway(GatewayConfig.from_settings(listen=listen, enroll_listen=enroll_listen))
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        gateway.start()
        self.stdout.write(f"agent gateway: Connect on {listen} (port {gateway.port}), Enroll on {enroll_listen}")
        stop.wait()
        self.stdout.write("stopping the agent gateway")
        gateway.stop(grace)
