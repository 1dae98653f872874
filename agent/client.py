"""gRPC client: enrollment over TLS, then the long-lived mutual-TLS Connect stream with reconnects."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from cryptography.hazmat.primitives.serialization import Encoding

from agent.identity import build_csr_pem, generate_private_key, load_certificate_pem, load_private_key, private_key_pem
from agent.pinning import PinError, certificate_fingerprint, format_fingerprint, pinned_ca_pem
from agent.protocol.gen.janction.agent.v1 import agent_pb2 as pb
from agent.protocol.gen.janction.agent.v1.agent_pb2_grpc import AgentGatewayStub
from agent.runtime.base import DEFAULT_GRACE_SECONDS
from agent.session import AgentSession, Outbox
from agent.state import AgentState, StateStore

log = logging.getLogger(__name__)

ENROLL_TIMEOUT_SECONDS = 30
ENROLL_ATTEMPTS = 8
STABLE_CONNECTION_SECONDS = 30
# A gateway that is down, overloaded or shedding load is waited out with backoff; anything else is final.
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
)
# How long a stopping agent waits for the acknowledgement of its last usage reports, then for the stream to end.
GOODBYE_ACK_SECONDS = 5.0
# Keepalive no more often than gRPC servers accept by default (grpc.http2.min_ping_interval_without_data_ms).
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class EnrollmentError(RuntimeError):
    """The gateway refused or could not complete enrollment."""


@dataclass
class Backoff:
    """Exponential backoff with full jitter: a delay drawn uniformly from [0, min(cap, base * 2^n)]."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        """Return the next delay and count the attempt."""
        delay = self.rng.uniform(0, min(self.cap, self.base * 2 ** min(self.attempt, 32)))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start over after a healthy connection."""
        self.attempt = 0


def resolve_connect_address(enroll_address: str, returned: str) -> str:
    """Return where to dial Connect given EnrollResponse.connect_address (see the proto)."""
    if not returned:
        return enroll_address
    if returned.startswith(":"):
        host = enroll_address.rsplit(":", 1)[0]
        return f"{host}{returned}"
    return returned


def enroll(
    *,
    store: StateStore,
    state: AgentState,
    gateway: str,
    token: str,
    ca_pem: bytes | None,
    hostname: str,
    backoff: Backoff | None = None,
    ca_fingerprint: bytes | None = None,
) -> None:
    """Enroll the node: create its key, send the CSR over TLS, store the certificate and CA.

    With `ca_fingerprint` (and no `ca_pem`) the gateway is trusted only through the CA with that fingerprint.
    """
    if ca_fingerprint is not None and ca_pem is None:
        try:
            ca_pem = pinned_ca_pem(gateway, ca_fingerprint)
        except PinError as exc:
            raise EnrollmentError(str(exc)) from exc
    if store.key_path.exists():
        key = load_private_key(store.key_path)
    else:
        key = generate_private_key()
        store.write_secret(store.key_path, private_key_pem(key))
    request = pb.EnrollRequest(enrollment_token=token, csr_pem=build_csr_pem(key, hostname).decode(), hostname=hostname)
    response = _call_enroll(gateway, ca_pem, request, backoff or Backoff())
    try:
        certificate = load_certificate_pem(response.certificate_pem.encode())
        load_certificate_pem(response.ca_certificate_pem.encode())
    except ValueError as exc:
        raise EnrollmentError(f"the gateway returned an unusable certificate: {exc}") from exc
    if certificate.public_key() != key.public_key():
        raise EnrollmentError("the gateway returned a certificate for another key")
    returned_ca = load_certificate_pem(response.ca_certificate_pem.encode())
    if ca_fingerprint is not None and certificate_fingerprint(returned_ca.public_bytes(Encoding.DER)) != ca_fingerprint:
        raise EnrollmentError(
            f"the gateway returned a CA other than the pinned {format_fingerprint(ca_fingerprint)}: "
            "do not use this gateway; ask the platform operator which CA it uses."
        )
    store.write_secret(store.cert_path, response.certificate_pem.encode())
    store.write_secret(store.ca_path, response.ca_certificate_pem.encode())
    state.node_id = response.node_id
    state.connect_address = resolve_connect_address(gateway, response.connect_address)
    store.save(state)
    log.info("enrolled as node %s; connecting to %s", state.node_id, state.connect_address)


def _call_enroll(gateway: str, ca_pem: bytes | None, request: pb.EnrollRequest, backoff: Backoff) -> pb.EnrollResponse:
    """Call Enroll, retrying while the gateway is unreachable."""
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(gateway, credentials, CHANNEL_OPTIONS) as channel:
        stub = AgentGatewayStub(channel)
        attempt = 1
        while True:
            try:
                return stub.Enroll(request, timeout=ENROLL_TIMEOUT_SECONDS)
            except grpc.RpcError as exc:
                failure = f"enrollment at {gateway} failed: {exc.code().name}: {exc.details()}"
                if tls_failure(exc.details() or ""):
                    raise EnrollmentError(tls_failure_advice(gateway, pinned=ca_pem is not None)) from exc
                if exc.code() not in RETRYABLE or attempt >= ENROLL_ATTEMPTS:
                    raise EnrollmentError(failure) from exc
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.1fs", failure, delay)
                time.sleep(delay)
                attempt += 1


_TLS_FAILURES = ("CERTIFICATE_VERIFY_FAILED", "Ssl handshake failed", "certificate verify failed", "Handshake failed")


def tls_failure(details: str) -> bool:
    """Return whether a gRPC error's details say the TLS handshake failed (retrying cannot help)."""
    return any(marker.lower() in details.lower() for marker in _TLS_FAILURES)


def tls_failure_advice(gateway: str, *, pinned: bool) -> str:
    """Return one sentence that explains a TLS failure at enrollment and says what to do."""
    if pinned:
        return (
            f"the gateway at {gateway} presented a certificate that does not match the CA this agent trusts "
            "(TLS verification failed): check that --gateway names the host the gateway's certificate is for "
            "(AGENT_GATEWAY_TLS_NAMES on the platform), or copy the command again from the provider page."
        )
    return (
        f"the gateway at {gateway} presented a certificate this host does not trust (TLS verification failed): "
        "run the command exactly as the provider page shows it, with its --ca-fingerprint (or pass --ca-cert "
        "with the platform CA)."
    )


def _requests(initial: list[pb.AgentMessage], outbox: Outbox) -> Iterator[pb.AgentMessage]:
    yield from initial
    while (message := outbox.get()) is not None:
        yield message


class AgentClient:
    """Keeps one Connect stream open, feeding it from the session and the session from it."""

    def __init__(
        self,
        *,
        session: AgentSession,
        address: str,
        credentials: grpc.ChannelCredentials,
        backoff: Backoff | None = None,
        tick_interval: float = 0.2,
    ) -> None:
        self._session = session
        self._address = address
        self._credentials = credentials
        self._backoff = backoff or Backoff()
        self._tick_interval = tick_interval
        self._stop = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # shutdown() may run in a signal handler on the locking thread
        self._call: grpc.Future | None = None

    def run(self) -> None:
        """Connect, reconnecting with backoff, until shutdown() is called."""
        ticker = threading.Thread(target=self._tick_loop, name="agent-ticker", daemon=True)
        ticker.start()
        while not self._stop.is_set():
            if self._connect_once():
                self._backoff.reset()
            if self._stop.is_set():
                break
            delay = self._backoff.next_delay()
            log.info("reconnecting to %s in %.1fs", self._address, delay)
            self._stop.wait(delay)
        ticker.join()
        self._session.close()

    def shutdown(self) -> None:
        """Stop the client; running workloads keep running (except sandboxes, which die with the agent)."""
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def stop_gracefully(self, grace_seconds: int = DEFAULT_GRACE_SECONDS) -> None:
        """Begin a graceful stop (SIGTERM): workloads get TERM, grace, KILL; a second call stops at once."""
        if self._stopping.is_set():
            self.shutdown()
            return
        self._stopping.set()
        threading.Thread(target=self._stop_gracefully, args=(grace_seconds,), name="agent-stop", daemon=True).start()

    def _stop_gracefully(self, grace_seconds: int) -> None:
        try:
            self._session.shutdown_workloads(grace_seconds)
            deadline = time.monotonic() + GOODBYE_ACK_SECONDS
            while self._session.unacknowledged_usage() and time.monotonic() < deadline and self._call is not None:
                time.sleep(0.05)
            self._stop.set()  # no reconnect once Goodbye is out
            if self._session.say_goodbye("the provider's agent is shutting down"):
                deadline = time.monotonic() + GOODBYE_ACK_SECONDS
                while self._call is not None and time.monotonic() < deadline:
                    time.sleep(0.05)
        except Exception:
            log.exception("graceful stop failed; stopping at once")
        finally:
            self.shutdown()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self._tick_interval):
            try:
                self._session.tick()
            except Exception:
                log.exception("periodic work failed")

    def _handle(self, message: pb.ControlMessage) -> None:
        try:
            self._session.handle(message)
        except Exception:
            log.exception("handling %s failed", message.WhichOneof("payload"))

    def _connect_once(self) -> bool:
        """Run one stream to its end; return whether it was healthy (a message came or it lasted)."""
        started = time.monotonic()
        received = False
        with grpc.secure_channel(self._address, self._credentials, CHANNEL_OPTIONS) as channel:
            initial, outbox = self._session.on_connected()
            call = AgentGatewayStub(channel).Connect(_requests(initial, outbox))
            with self._lock:
                self._call = call
            if self._stop.is_set():
                call.cancel()
            try:
                for message in call:
                    received = True
                    self._handle(message)
                log.warning("the gateway closed the stream")
            except grpc.RpcError as exc:
                if not self._stop.is_set():
                    log.warning("connection to %s lost: %s: %s", self._address, exc.code().name, exc.details())
            finally:
                self._session.on_disconnected()
                with self._lock:
                    self._call = None
                call.cancel()
        return received or time.monotonic() - started >= STABLE_CONNECTION_SECONDS
