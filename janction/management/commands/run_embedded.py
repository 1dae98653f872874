"""`manage.py run_embedded`: the whole marketplace in one command, on the embedded default."""

import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from janction.embedded import BeatLoop, demo_agent_start


class Command(BaseCommand):
    help = (
        "Serve the web app (daphne) with, in the same process, the agent gateway and an in-process beat loop, "
        "and start the demo provider's agent (declared fake GPUs, sandbox runtime) as a child process."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address the web app listens on")
        parser.add_argument("--port", type=int, default=8000, help="port the web app listens on")
        parser.add_argument("--no-agent", action="store_true", help="do not start the demo provider's agent")

    def handle(self, *args, host: str, port: int, no_agent: bool, **options):
        if not settings.JANCTION_EMBEDDED:
            raise CommandError(
                "run_embedded is the embedded default only; in real mode run daphne, celery and agent_gateway."
            )
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be between 1 and 65535, got {port}.")
        self._check_port_free(host, port, hint=f"start this one on another port: make run PORT={port + 1}")
        for setting in (
            "AGENT_GATEWAY_ENROLL_LISTEN",
            "AGENT_GATEWAY_LISTEN",
            "SERVICE_INGRESS_LISTEN",
            "SERVICE_INGRESS_TUNNEL_LISTEN",
        ):
            gateway_host, _, gateway_port = getattr(settings, setting).rpartition(":")
            self._check_port_free(
                gateway_host.strip("[]"), int(gateway_port), hint=f"set {setting} to a free HOST:PORT"
            )
        from janction.asgi import application
        from marketplace.svc.ingress.server import Ingress
        from nodes.gateway.server import Gateway, GatewayConfig

        gateway = Gateway(GatewayConfig.from_settings())
        gateway.start()
        # The service endpoint (/svc/...) and the agents' tunnels, in this process (the embedded default).
        ingress = Ingress()
        ingress.start()
        beat = BeatLoop(settings.CELERY_BEAT_SCHEDULE)
        beat.start()
        agent = None if no_agent else demo_agent_start(gateway=settings.AGENT_GATEWAY_ENROLL_LISTEN)
        self.stdout.write(self._banner(port=port, agent=agent))
        try:
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                signal_handlers=True,
            ).run()
        finally:
            self._stop(agent, beat, gateway)
            ingress.stop()

    def _check_port_free(self, host: str, port: int, *, hint: str) -> None:
        """Refuse to start when a port is taken, before anything starts (daphne only logs it, gRPC may hang)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise CommandError(f"--host {host!r} is not an address this machine can listen on ({exc}).") from None
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise CommandError(
                    f"Cannot listen on {host}:{port} ({exc.strerror}): another `make run` may be running; "
                    f"stop it, or {hint}"
                ) from None

    def _banner(self, *, port: int, agent: subprocess.Popen | None) -> str:
        """Return what to open and what to try next, printed once the pieces are up."""
        site = settings.JANCTION_SITE_URL
        lines = [
            self.style.SUCCESS(f"Janction (embedded demo) is serving {site}/"),
            f"  Open       {site}/ and sign in as buyer@janction.localhost or provider@janction.localhost",
            "             (passwords printed above, once; new ones: .venv/bin/python manage.py seed_demo "
            "--reset-passwords)",
            "  Try next   1. Dashboard: press 'Add 100 demo USDC' (demo money)",
            "             2. Rentals: rent 1 vGPU of ada-12g; the page follows it live until it completes",
            "             3. As the provider, My nodes: add a node and run the command it shows (a second agent)",
            f"             4. API docs {site}/api/docs/, an API key on 'API keys', then the curls in README.md",
            f"  Gateway    enroll {settings.AGENT_GATEWAY_ENROLL_LISTEN}, connect {settings.AGENT_GATEWAY_LISTEN}",
            f"  Services   {settings.SERVICE_PUBLIC_URL}/svc/<service>/<port>/ (tunnels on "
            f"{settings.SERVICE_INGRESS_TUNNEL_LISTEN}; local, no overlay)",
        ]
        if agent is not None:
            lines.append(f"  Demo agent pid {agent.pid} (fake GPUs), log {Path(settings.VAR_DIR) / 'agent.log'}")
        if urlsplit(site).port not in (port, None):
            lines.append(
                self.style.WARNING(f"  Note       JANCTION_SITE_URL ({site}) names another port than --port {port}")
            )
        lines.append("  Stop       Ctrl-C")
        return "\n".join(lines)

    def _stop(self, agent: subprocess.Popen | None, beat: BeatLoop, gateway) -> None:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        beat.stop()
        gateway.stop(settings.AGENT_GATEWAY_STOP_GRACE_SECONDS)
