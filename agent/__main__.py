"""Entry point: `python -m agent --gateway HOST:PORT --state-dir DIR ...`."""

from __future__ import annotations

import logging
import signal
import socket
import sys

from agent.client import AgentClient, EnrollmentError, enroll
from agent.colocation import OwnerWatch
from agent.config import AgentConfig, parse_config
from agent.identity import load_private_key, mutual_tls_credentials
from agent.nvml import FakeGpuBackend, GpuBackend, NvmlBackend, NvmlUnavailable
from agent.overlay.host import OverlayHost, OverlayUnavailable, rtt_loop
from agent.runtime import RuntimeUnavailable, ServiceConnectError, make_runtime
from agent.session import AgentSession
from agent.slicing import SlicingError, plan_node
from agent.state import StateStore
from agent.tunnel import TunnelManager
from agent.usage import UsageMeter

log = logging.getLogger("agent")

EXIT_ENVIRONMENT = 1
EXIT_USAGE = 2


def run(config: AgentConfig) -> int:
    """Start the agent with validated settings; return the process exit status."""
    store = StateStore(config.state_dir)
    state = store.load()
    runtime = make_runtime(
        config.runtime,
        hidden_paths=(str(config.state_dir),),
        docker_socket=config.docker_socket,
        oci_runtime=config.oci_runtime,
        image_disk_quota=config.image_disk_quota,
        image_ledger=config.state_dir / "images.json",
        allow_egress=config.allow_egress,
    )
    try:
        runtime.check_available()
        backend: GpuBackend = (
            FakeGpuBackend(
                config.fake_gpus,
                seed=state.fake_seed,
                processes_file=config.fake_gpu_processes,
                fault=config.fake_gpu_fault,
            )
            if config.fake_gpus
            else NvmlBackend()
        )
    except (RuntimeUnavailable, NvmlUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    overlay = None
    if config.overlay:
        try:
            overlay = OverlayHost(state_dir=config.state_dir, prefix=config.overlay_prefix)
        except OverlayUnavailable as exc:
            print(f"error: --overlay: {exc}", file=sys.stderr)
            return EXIT_ENVIRONMENT
        log.info(overlay.capabilities.describe())
        live = {pid for pid, record in state.placements.items() if record.state in ("starting", "running", "paused")}
        overlay.cleanup(keep=live)
    try:
        runtime.check_service_connections()
    except ServiceConnectError as exc:
        # Batch rentals still work; only connections into workloads (service rentals) do not.
        log.warning("service rentals will fail on this node: %s", exc)
    try:
        plan = plan_node(backend.gpus(), config.slicing)
    except SlicingError as exc:
        print(f"error: --slices: {exc}", file=sys.stderr)
        return EXIT_USAGE
    hostname = socket.gethostname()
    if not store.enrolled:
        try:
            enroll(
                store=store,
                state=state,
                gateway=config.gateway,
                token=config.enroll_token,
                ca_pem=config.ca_cert,
                ca_fingerprint=config.ca_fingerprint,
                hostname=hostname,
            )
        except EnrollmentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ENVIRONMENT
    trusted = store.ca_path.read_bytes() + (b"\n" + config.ca_cert if config.ca_cert else b"")
    credentials = mutual_tls_credentials(
        key_pem=store.key_path.read_bytes(), certificate_pem=store.cert_path.read_bytes(), trusted_ca_pem=trusted
    )
    meter = UsageMeter(load_private_key(store.key_path), interval_ms=config.usage_interval * 1000)
    session = AgentSession(
        store=store,
        state=state,
        backend=backend,
        plan=plan,
        runtime=runtime,
        meter=meter,
        hostname=hostname,
        heartbeat_interval=config.heartbeat_interval,
        watch=OwnerWatch(backend=backend, owns_process=runtime.placement_of_process),
        tunnels=TunnelManager(runtime=runtime, credentials=credentials),
        overlay=overlay,
    )
    if overlay is not None:
        overlay.resume()
        rtt_loop(overlay, interval=config.heartbeat_interval)
    session.recover()
    client = AgentClient(session=session, address=state.connect_address or config.gateway, credentials=credentials)
    # The first SIGTERM or SIGINT stops workloads gracefully and says goodbye; a second one stops at once.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: client.stop_gracefully())
    log.info(
        "agent for node %s: %d GPU(s), %d vGPU(s), runtime %s%s",
        state.node_id,
        len(backend.gpus()),
        len(plan),
        runtime.name,
        " (fake GPUs)" if backend.fake else "",
    )
    client.run()
    if overlay is not None:
        overlay.shutdown()
    backend.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run the agent."""
    config = parse_config(argv)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
