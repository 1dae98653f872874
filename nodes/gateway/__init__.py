"""The agent gateway: the gRPC server agents dial (Enroll over TLS, Connect over mutual TLS).

`server.Gateway` owns the gRPC server, health checking and the background loops (heartbeat
flushes, the offline sweep, command delivery); `servicer.AgentGatewayServicer` only translates
messages to the services in `nodes.services`. See docs/gateway.md.
"""
