"""The extension and the server agree: the same redaction vectors, and the extension's signatures verify here."""

import json
import subprocess
from pathlib import Path

import pytest

from contributions import redaction, signing

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "extension/tests/redaction_vectors.json").read_text())


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["input"][:40] for vector in VECTORS])
def test_server_patterns_redact_the_extensions_vectors_alike(vector):
    assert redaction.redact(vector["input"]) == vector["redacted"]
    assert sorted(redaction.findings(vector["input"])) == sorted(vector["found"])
    assert redaction.findings(vector["redacted"]) == []


def test_signatures_made_by_the_extensions_code_verify_on_the_server():
    body = '{"device_id":1,"counter":1,"records":[]}'
    made = json.loads(
        subprocess.run(
            ["node", str(ROOT / "tests/js/contribution_sign.js"), body], capture_output=True, text=True, check=True
        ).stdout
    )
    assert [entry["algorithm"] for entry in made] == ["Ed25519", "ECDSA-P256"]
    for entry in made:
        key = signing.b64decode(entry["public_key"])
        signing.public_key_check(algorithm=entry["algorithm"], public_key=key)
        assert signing.fingerprint(key) == entry["fingerprint"]
        sig = signing.b64decode(entry["signature"])
        assert signing.signature_valid(algorithm=entry["algorithm"], public_key=key, signature=sig, body=body.encode())
        assert not signing.signature_valid(
            algorithm=entry["algorithm"], public_key=key, signature=sig, body=body.encode() + b" "
        )
