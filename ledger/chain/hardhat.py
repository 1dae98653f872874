"""Start a local Hardhat 2 node (`npx hardhat node`): the contract tests and the settlement benchmark use it.

A development tool, not part of real mode (which connects to a node it is given: ledger.chain.node).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from web3 import Web3

HARDHAT_STARTUP_TIMEOUT_SECONDS = 60
HARDHAT_CHAIN_ID = 31337


class HardhatUnavailable(RuntimeError):
    """The Hardhat node is not installed, or did not answer in time."""


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group that ``process`` leads: npx and the node it started."""
    for sig, grace_seconds in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_seconds)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def hardhat_node(*, root: Path, request_timeout: int = 30) -> Iterator[Web3]:
    """Run `npx hardhat node` from `root` on a free loopback port for the block; yield a Web3 talking to it."""
    if not (root / "node_modules" / ".bin" / "hardhat").exists():
        raise HardhatUnavailable("node_modules/.bin/hardhat is missing: run `npm ci` at the repository root")
    port = free_loopback_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            ["npx", "hardhat", "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
        )
        try:
            w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": request_timeout}))
            deadline = time.monotonic() + HARDHAT_STARTUP_TIMEOUT_SECONDS
            while not w3.is_connected():
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-4000:]
                    raise HardhatUnavailable(
                        f"hardhat node did not answer on port {port} (exit status {process.poll()}):\n{output}"
                    )
                time.sleep(0.2)
            if w3.eth.chain_id != HARDHAT_CHAIN_ID:
                raise HardhatUnavailable(f"the node on port {port} is chain {w3.eth.chain_id}, not Hardhat's")
            yield w3
        finally:
            stop_process_group(process)
