"""The service ingress (issue 15): HTTP at /svc/<slug>/<port>/..., carried to containers over agents' tunnels."""
