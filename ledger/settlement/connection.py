"""The chain connection of this deployment and the lock that serialises settlement work."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from django.conf import settings
from django.db import connection
from web3.exceptions import ProviderConnectionError, RequestTimedOut, TooManyRequests

from ledger.chain.node import ChainConfig, ChainConnection, connect_embedded, connect_rpc

# Errors that mean the node is unreachable or overloaded, not that a call is wrong.
CHAIN_DOWN_ERRORS = (requests.RequestException, ProviderConnectionError, RequestTimedOut, TooManyRequests)

# pg_try_advisory_lock key: "JCTSETTL" read as a big-endian integer.
_SETTLEMENT_LOCK_KEY = int.from_bytes(b"JCTSETTL", "big") - 2**63
_local_lock = threading.Lock()
_connections: dict[tuple, ChainConnection] = {}
_connections_lock = threading.Lock()


def chain_connection_get() -> ChainConnection:
    """Return the chain connection the settings describe: the RPC node, or the embedded in-process chain."""
    if not settings.CHAIN_RPC_URL:
        return connect_embedded()
    config = ChainConfig(
        rpc_url=settings.CHAIN_RPC_URL,
        operator_key=settings.CHAIN_OPERATOR_KEY,
        settlement_address=settings.CHAIN_SETTLEMENT_ADDRESS,
        usdc_address=settings.CHAIN_USDC_ADDRESS,
        jct_address=settings.CHAIN_JCT_ADDRESS,
        slasher_key=settings.CHAIN_SLASHER_KEY,
    )
    key = (config, settings.CHAIN_START_BLOCK)
    with _connections_lock:
        if key not in _connections:
            _connections[key] = connect_rpc(config, start_block=settings.CHAIN_START_BLOCK)
        return _connections[key]


def chain_confirmations(conn: ChainConnection) -> int:
    """Return how many blocks must follow an event before it counts (0 on the embedded chain, which never reorgs)."""
    return 0 if conn.embedded else max(settings.CHAIN_CONFIRMATIONS, 0)


@contextmanager
def settlement_lock() -> Iterator[bool]:
    """Hold the settlement lock while the block runs if nobody else does; yield whether it was acquired.

    On PostgreSQL this is a session advisory lock, released by the server if the worker dies.
    """
    if connection.vendor != "postgresql":
        acquired = _local_lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                _local_lock.release()
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [_SETTLEMENT_LOCK_KEY])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_SETTLEMENT_LOCK_KEY])
