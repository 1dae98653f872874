"""A real daphne process serving the ASGI application on the test database, for attacks that kill processes."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[2]
SERVER = """
import sys
import daphne.server  # installs Twisted's asyncio reactor first
from daphne.endpoints import build_endpoint_description_strings
from janction.asgi import application
endpoints = build_endpoint_description_strings(host="127.0.0.1", port=int(sys.argv[1]))
daphne.server.Server(application=application, endpoints=endpoints).run()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def daphne_server(log_path: Path, extra_env: dict[str, str] | None = None):
    """Start daphne on the test database; yield (base URL, process); stop it afterwards."""
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.fail("This test needs PostgreSQL: set DATABASE_URL (see make test).")
    parts = urlsplit(os.environ["DATABASE_URL"])
    env = {
        **os.environ,
        "DATABASE_URL": urlunsplit(parts._replace(path=f"/{connection.settings_dict['NAME']}")),
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "x"),
        **(extra_env or {}),
    }
    port = free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Daphne did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
