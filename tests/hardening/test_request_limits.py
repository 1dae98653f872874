"""Item 1 and 5 of the hardening issue: bounded bodies, bounded nesting, no NULs, a sane recursion limit."""

import json
import subprocess
import sys

import pytest
import requests

from janction.guards import json_depth_exceeds
from janction.recursion import RECURSION_LIMIT
from marketplace.services import api_key_create
from tests.hardening.server import REPO, daphne_server


def test_importing_the_urlconf_leaves_a_sane_recursion_limit():
    import py_ecc  # noqa: F401

    import janction.urls  # noqa: F401  (imports web3, py_ecc and py-evm)

    assert sys.getrecursionlimit() == RECURSION_LIMIT
    with pytest.raises(RecursionError):  # the C decoder gives up instead of overflowing the stack
        json.loads("[" * (RECURSION_LIMIT * 2))


def test_deep_json_in_a_worker_thread_raises_instead_of_killing_the_process():
    """With py_ecc's limit of 100,000 this snippet segfaults (exit 139); after importing janction it raises."""
    code = (
        "import json, sys, threading\n"
        "import janction, web3, py_ecc, eth\n"
        "def parse():\n"
        "    try:\n"
        "        json.loads('[' * 99_000)\n"
        "    except RecursionError:\n"
        "        print('refused')\n"
        "thread = threading.Thread(target=parse)\n"
        "thread.start()\n"
        "thread.join()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused"


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        (b"[" * 99_000, True),
        (b"[" * 33 + b"]" * 33, True),
        (b"[" * 32 + b"]" * 32, False),
        (b'{"a": ' * 32 + b"1" + b"}" * 32, False),
        (b'{"a": ' * 33 + b"1" + b"}" * 33, True),
        # Brackets inside strings, escaped quotes included, do not count.
        (b'["' + b"[" * 100 + b'"]', False),
        (b'["\\"' + b"[" * 100 + b'"]', False),
        (b'["\\\\"' + b"[" * 100 + b"]", True),
        (b"[]" * 1000, False),
    ],
)
def test_depth_scan(body, too_deep):
    assert json_depth_exceeds(body, 32) is too_deep


def test_too_deep_body_is_refused_before_parsing(owner_client):
    response = owner_client.post("/api/v1/api-keys/", data=b"[" * 99_000, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "too_deeply_nested"
    # Whatever the declared content type: the scan runs for every body.
    response = owner_client.post("/api/v1/api-keys/", data=b"[" * 99_000, content_type="text/plain")
    assert response.status_code == 400


def test_oversized_body_is_refused(owner_client, settings):
    settings.JANCTION_MAX_BODY_BYTES = 1000
    response = owner_client.post(
        "/api/v1/api-keys/", data=json.dumps({"name": "x" * 2000}), content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/rentals/", {"pool": "ada\u0000", "vgpus": 1}),
        ("/api/v1/api-keys/", {"name": "a\u0000b"}),
        ("/api/v1/nodes/", {"name": "n", "\u0000": "x"}),
    ],
)
def test_nul_in_json_text_is_a_400(owner_client, path, body):
    response = owner_client.post(
        path, data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k" * 10
    )
    assert response.status_code == 400, response.content
    assert "NUL" in response.json()["message"]


def test_the_api_reads_json_bodies_only(owner_client):
    response = owner_client.post(
        "/api/v1/api-keys/", data="name=a%00b", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path", ["/api/v1/rounds/?pool=ada%00", "/api/v1/rentals/?pool=%00", "/api/v1/pools/?x=%00"])
def test_nul_in_the_query_string_is_a_400(owner_client, path):
    response = owner_client.get(path)
    assert response.status_code == 400
    assert "NUL" in response.json()["message"]


@pytest.mark.slow
def test_deeply_nested_body_does_not_kill_daphne(transactional_db, owner, tmp_path):
    """99,000 nested '[' to a JSON POST: daphne answers 400 and keeps serving (it used to segfault)."""
    _, raw_key = api_key_create(user=owner, name="attacker")
    auth = {"Authorization": f"Bearer {raw_key}", "Content-Type": "application/json"}
    with daphne_server(tmp_path / "daphne.log") as (base, process):
        for _ in range(3):
            response = requests.post(f"{base}/api/v1/api-keys/", data=b"[" * 99_000, headers=auth, timeout=30)
            assert response.status_code == 400
            assert response.json()["code"] == "too_deeply_nested"
        response = requests.post(f"{base}/api/v1/api-keys/", data=b"{" * 2_000_000, headers=auth, timeout=30)
        assert response.status_code == 413
        chunks = (b"[" * 65536 for _ in range(40))  # 2.5 MiB without a Content-Length: cut off while it arrives
        response = requests.post(f"{base}/api/v1/api-keys/", data=chunks, headers=auth, timeout=30)
        assert response.status_code == 413
        assert process.poll() is None
        assert requests.get(f"{base}/api/v1/pools/", timeout=30).status_code == 200
        response = requests.post(f"{base}/api/v1/api-keys/", json={"name": "still here"}, headers=auth, timeout=30)
        assert response.status_code == 201
