"""`python -m pricing.pvcg`: read a market as JSON on stdin, write the result as JSON on stdout.

Invalid input exits with status 2 and one ``error: ...`` line on stderr. Strict JSON only: duplicate keys,
NaN/Infinity and deep nesting are refused before any clearing.
"""

import json
import re
import sys
from typing import Any

from pricing.pvcg import MarketError, _shown, market_clear, parse_market, result_to_json


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a key given twice."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise MarketError(f"invalid JSON: key {_shown(key)} appears twice in one object")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON."""
    raise MarketError(f"invalid JSON: {name} is not allowed")


# A market is three levels deep; anything past this is not a market, and deep nesting can exhaust the C stack.
MAX_JSON_DEPTH = 32
_JSON_TOKENS = re.compile(r'"(?:\\.|[^"\\])*"|[\[\]{}]')


def _json_depth(text: str) -> int:
    """Return the deepest bracket nesting of a JSON text, ignoring brackets inside strings."""
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(text):
        mark = match.group()
        if mark in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif mark in ("]", "}"):
            depth -= 1
    return deepest


def _decode(data: bytes) -> Any:
    """Decode stdin bytes as strict JSON, or raise MarketError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MarketError("input is not UTF-8") from exc
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise MarketError("invalid JSON: nested too deeply")
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise MarketError("invalid JSON: nested too deeply") from exc
    except MarketError:
        raise
    except ValueError as exc:
        raise MarketError(f"invalid JSON: {exc}") from exc


def main() -> int:
    """Clear the market on stdin, print the result on stdout and return the exit status."""
    try:
        market = parse_market(_decode(sys.stdin.buffer.read()))
        result = market_clear(market)
    except MarketError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(json.dumps(result_to_json(result)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
