"""What a rental may expose: a few named HTTP ports (imported by rental_submit; no model imports here)."""

import re
import secrets

from django.conf import settings

from marketplace.svc.errors import ExposeInvalid

PORT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?\Z")
# Lower-case letters and digits without look-alikes (no 0/o, 1/l): 12 characters carry 60 bits.
_SLUG_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def expose_validate(expose) -> list[dict]:
    """Return a clean copy of `expose` ([{"name": "api", "port": 8000}, ...]) or raise ExposeInvalid."""
    expose = [] if expose is None else expose
    limit = settings.SERVICES_MAX_EXPOSED_PORTS
    example = 'e.g. [{"name": "api", "port": 8000}]'
    if not isinstance(expose, list):
        raise ExposeInvalid(f"expose must be a list of named ports, {example}.", detail={"field": "expose"})
    if len(expose) > limit:
        raise ExposeInvalid(
            f"A rental may expose at most {limit} ports; this one asks for {len(expose)}.",
            detail={"field": "expose", "limit": limit},
        )
    clean, names, ports = [], set(), set()
    for index, entry in enumerate(expose):
        where = {"field": "expose", "index": index}
        if not isinstance(entry, dict) or set(entry) - {"name", "port"} or not {"name", "port"} <= set(entry):
            raise ExposeInvalid(f"expose[{index}] must be an object with a name and a port, {example}.", detail=where)
        name, port = entry["name"], entry["port"]
        if not isinstance(name, str) or not PORT_NAME.match(name):
            raise ExposeInvalid(
                f"expose[{index}].name must be 1-32 lower-case letters, digits or hyphens, starting and ending "
                'with a letter or digit (it becomes part of the URL), e.g. "api".',
                detail=where,
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ExposeInvalid(f"expose[{index}].port must be a whole number from 1 to 65535.", detail=where)
        if name in names:
            raise ExposeInvalid(f"The port name {name!r} appears twice in expose; names must be unique.", detail=where)
        if port in ports:
            raise ExposeInvalid(f"Port {port} appears twice in expose; expose each port once.", detail=where)
        names.add(name)
        ports.add(port)
        clean.append({"name": name, "port": port})
    return clean


def service_slug_new() -> str:
    """Return a fresh random slug for a service's URL (/svc/<slug>/...)."""
    return "".join(secrets.choice(_SLUG_ALPHABET) for _ in range(12))
