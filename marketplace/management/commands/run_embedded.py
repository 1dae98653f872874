"""`manage.py run_embedded`: the whole marketplace in one command, on the embedded default."""

import signal
import subprocess

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
        from janction.asgi import application
        from nodes.gateway.server import Gateway, GatewayConfig

        gateway = Gateway(GatewayConfig.from_settings())
        gateway.start()
        beat = BeatLoop(settings.CELERY_BEAT_SCHEDULE)
        beat.start()
        agent = None if no_agent else demo_agent_start(gateway=settings.AGENT_GATEWAY_ENROLL_LISTEN)
        self.stdout.write(
            self.style.SUCCESS(f"Janction (embedded demo) on http://{host}:{port}/")
            + f"\n  agent gateway: enroll {settings.AGENT_GATEWAY_ENROLL_LISTEN}, "
            + f"connect {settings.AGENT_GATEWAY_LISTEN}"
            + ("" if agent is None else f"\n  demo agent (fake GPUs) pid {agent.pid}, log var/agent.log")
        )
        try:
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                signal_handlers=True,
            ).run()
        finally:
            self._stop(agent, beat, gateway)

    def _stop(self, agent: subprocess.Popen | None, beat: BeatLoop, gateway) -> None:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        beat.stop()
        gateway.stop(settings.AGENT_GATEWAY_STOP_GRACE_SECONDS)
