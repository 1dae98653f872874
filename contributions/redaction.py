"""Redaction patterns: e-mail addresses, card numbers, phone numbers, access tokens and URL query secrets.

The extension (extension/src/redact.js) removes these before a record is shown for upload; the server runs
the same patterns again and refuses a record that still holds any. Both sides are tested against the same
vectors (extension/tests/redaction_vectors.json), so the two sets of regular expressions cannot drift apart
unnoticed. Python's patterns use re.ASCII so that \\d, \\w and \\b mean what they mean in JavaScript.
Pure: no Django import.
"""

from __future__ import annotations

import re

# Query parameter names whose values are secrets wherever they appear in a URL.
QUERY_PARAMS_TO_REDACT = (
    "access_token|refresh_token|id_token|token|auth|authorization|api_key|apikey|key|secret|client_secret"
    "|password|passwd|pwd|pass|session|sessionid|sid|code|signature|sig"
)
URL_SECRET = re.compile(r"([?&#](?:" + QUERY_PARAMS_TO_REDACT + r")=)(?!\[secret\])[^&#\s]+", re.IGNORECASE | re.ASCII)
# Bounded parts (local part, labels, their number) keep every pattern linear in the text's length.
EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z])", re.ASCII
)
TOKEN = re.compile(
    r"\bBearer\s+[A-Za-z0-9._~+/-]{8,}=*"
    r"|\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|sk-[A-Za-z0-9_-]{20,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|jct_[A-Za-z0-9_-]{16,})",
    re.ASCII,
)
# Any other run of 32+ token characters is a token when it mixes letters and digits (checked on the match).
LONG_RUN = re.compile(r"\b[A-Za-z0-9_-]{32,}\b", re.ASCII)
# 13 to 19 digits, optionally grouped by single spaces or hyphens; a card only if the Luhn check passes.
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", re.ASCII)
# 9 to 15 digits with an optional leading + and the usual separators (spaces, dots, hyphens, parentheses).
PHONE = re.compile(r"(?<![\w+])\+?\(?\d(?:[ .()-]{0,2}\d){8,14}(?!\w)", re.ASCII)

MARKERS = {"email": "[email]", "card": "[card]", "phone": "[phone]", "token": "[token]", "url_secret": "[secret]"}


def luhn_valid(digits: str) -> bool:
    """Return whether a string of digits passes the Luhn check."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mixed(run: str) -> bool:
    return any(char.isdigit() for char in run) and any(char.isalpha() for char in run)


def _long_run(match: re.Match) -> str:
    return MARKERS["token"] if _mixed(match.group(0)) else match.group(0)


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return MARKERS["card"] if luhn_valid(digits) else match.group(0)


def redact(text: str) -> str:
    """Return ``text`` with every pattern replaced by its marker, in the extension's order."""
    text = URL_SECRET.sub(lambda match: match.group(1) + MARKERS["url_secret"], text)
    text = EMAIL.sub(MARKERS["email"], text) if "@" in text else text
    text = TOKEN.sub(MARKERS["token"], text)
    text = LONG_RUN.sub(_long_run, text)
    text = CARD.sub(_card, text)
    return PHONE.sub(MARKERS["phone"], text)


def findings(text: str) -> list[str]:
    """Return the kinds of private data still in ``text`` (empty when redaction would change nothing)."""
    found = []
    if URL_SECRET.search(text):
        found.append("url_secret")
    if "@" in text and EMAIL.search(text):
        found.append("email")
    if TOKEN.search(text) or any(_mixed(match.group(0)) for match in LONG_RUN.finditer(text)):
        found.append("token")
    if any(luhn_valid(re.sub(r"\D", "", match.group(0))) for match in CARD.finditer(text)):
        found.append("card")
    if PHONE.search(CARD.sub(_card, text)):
        found.append("phone")
    return found
