"""Services (issue 15): rentals that expose HTTP ports, reached at /svc/<slug>/<port name>/ through the ingress."""
