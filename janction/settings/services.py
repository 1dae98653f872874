"""Services (issue 15): what a rental may expose, the service endpoint's limits and where the ingress listens."""

from .env import env_bool, env_int, env_list, env_str
from .janction import JANCTION_EMBEDDED

# Most HTTP ports one rental may expose at /svc/<slug>/<name>/.
SERVICES_MAX_EXPOSED_PORTS = env_int("SERVICES_MAX_EXPOSED_PORTS", 8)
# The ingress: its HTTP listen address and the mutual-TLS gRPC address agents dial their tunnels to.
SERVICE_INGRESS_LISTEN = env_str("SERVICE_INGRESS_LISTEN", "127.0.0.1:8300")
SERVICE_INGRESS_TUNNEL_LISTEN = env_str("SERVICE_INGRESS_TUNNEL_LISTEN", "127.0.0.1:8301")
# What agents dial (host:port of each ingress's tunnel port, reachable from the providers): every ingress process
# gets tunnels from every agent that runs an exposed service. Empty: SERVICE_INGRESS_TUNNEL_LISTEN.
SERVICE_INGRESS_TUNNEL_ADDRESSES = env_list("SERVICE_INGRESS_TUNNEL_ADDRESSES", [])
# The endpoint over the overlay (docs/overlay.md): an ingress on the hub's host reaches containers on service
# segments through the hub's segment links (in its own network namespace, or the one at ..._OVERLAY_NETNS),
# and takes the agent's tunnel where that path is not up. Off: always the tunnel.
SERVICE_INGRESS_OVERLAY = env_bool("SERVICE_INGRESS_OVERLAY", False)
SERVICE_INGRESS_OVERLAY_NETNS = env_str("SERVICE_INGRESS_OVERLAY_NETNS", "")
# Time to connect over the overlay before taking the tunnel; how long a placement whose overlay path failed
# is reached through the tunnel only.
SERVICE_OVERLAY_CONNECT_SECONDS = float(env_str("SERVICE_OVERLAY_CONNECT_SECONDS", "2.0"))
SERVICE_OVERLAY_DOWN_SECONDS = float(env_str("SERVICE_OVERLAY_DOWN_SECONDS", "10.0"))
# Idle tunnel streams each agent keeps open per exposed port and ingress (a request takes one, the agent
# replaces it), and how long a request waits for one before a 503.
SERVICE_TUNNEL_POOL_SIZE = env_int("SERVICE_TUNNEL_POOL_SIZE", 4)
SERVICE_TUNNEL_WAIT_SECONDS = env_int("SERVICE_TUNNEL_WAIT_SECONDS", 5)
# Limits per request: body size, header size, the wait for the service's response head, and the whole exchange
# (a stream or websocket is cut after this long).
SERVICE_REQUEST_MAX_BYTES = env_int("SERVICE_REQUEST_MAX_BYTES", 64 * 1024 * 1024)
SERVICE_HEADER_MAX_BYTES = env_int("SERVICE_HEADER_MAX_BYTES", 32 * 1024)
SERVICE_RESPONSE_TIMEOUT_SECONDS = env_int("SERVICE_RESPONSE_TIMEOUT_SECONDS", 60)
SERVICE_REQUEST_MAX_SECONDS = env_int("SERVICE_REQUEST_MAX_SECONDS", 3600)
# Requests one service (one rental) may have in flight across its ports, per ingress process; more get 429.
SERVICE_MAX_CONCURRENT_REQUESTS = env_int("SERVICE_MAX_CONCURRENT_REQUESTS", 64)
# A separate origin for services ("https://svc.example.com"): the ingress then serves only requests for that host,
# so no service page shares the site's origin. Empty in the embedded default (one process, one origin; the
# Content-Security-Policy sandbox and the stripped cookies still hold).
SERVICE_ORIGIN = env_str("SERVICE_ORIGIN", "")
# Where the links on the rental page and in the API point: SERVICE_ORIGIN, or the ingress's own address.
SERVICE_PUBLIC_URL = env_str(
    "SERVICE_PUBLIC_URL", f"http://{SERVICE_INGRESS_LISTEN}" if JANCTION_EMBEDDED and not SERVICE_ORIGIN else ""
)
# How often the ingress writes its per-service counters to the database.
SERVICE_STATS_FLUSH_SECONDS = env_int("SERVICE_STATS_FLUSH_SECONDS", 2)
# Run the ingress inside `make run`'s process (the embedded default).
SERVICE_INGRESS_EMBEDDED = env_bool("SERVICE_INGRESS_EMBEDDED", JANCTION_EMBEDDED)
# Sent on every response of the service endpoint: the service's pages run in a sandbox with an opaque origin, so
# their scripts cannot read the site's cookies or storage nor act as the site.
SERVICE_CSP = env_str("SERVICE_CSP", "sandbox")
# How long the ingress reuses a successful authorisation (key or token, service, port) without asking the database:
# a revoked token or key, or a cancelled rental, is refused at most this long after. 0: ask on every request.
SERVICE_AUTH_CACHE_SECONDS = float(env_str("SERVICE_AUTH_CACHE_SECONDS", "1.0"))
