"""The agent's side of the overlay network (docs/overlay.md): WireGuard underlay, VxLAN segments, cleanup.

Everything here drives `ip`, `wg`, `wireguard-go` and `nsenter` through `agent.overlay.net`; nothing
imports Django. The agent only touches interfaces and namespaces whose names start with its prefix.
"""
