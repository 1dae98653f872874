"""CA pinning: the agent trusts only the CA whose SHA-256 the enrollment command names, never the first it sees."""

import hashlib
import socket
import ssl
import threading

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from agent.config import parse_config
from agent.pinning import PinError, format_fingerprint, parse_fingerprint, pinned_ca_pem
from tests.agent.pki import make_pki

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _sha256(pem_certificate) -> bytes:
    return hashlib.sha256(pem_certificate.public_bytes(Encoding.DER)).digest()


@pytest.fixture
def tls_server(tmp_path):
    """A TLS server on localhost that presents a leaf signed by a throwaway CA, with the CA in its chain."""
    pki = make_pki()
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pki.server_cert_pem + pki.ca_pem)
    key = tmp_path / "key.pem"
    key.write_bytes(pki.server_key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    context.set_alpn_protocols(["h2"])
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield pki, f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    listener.close()


@pytest.mark.parametrize(
    "text",
    ["sha256:" + "ab" * 32, "SHA256:" + "AB" * 32, "ab" * 32, ":".join(["AB"] * 32), "  sha256:" + "ab" * 32 + "\n"],
)
def test_fingerprints_are_read_in_the_usual_spellings(text):
    assert parse_fingerprint(text) == bytes.fromhex("ab" * 32)
    assert format_fingerprint(parse_fingerprint(text)) == "sha256:" + "ab" * 32


@pytest.mark.parametrize("text", ["", "sha256:", "sha256:" + "ab" * 31, "sha256:" + "zz" * 32, "md5:" + "ab" * 16])
def test_malformed_fingerprints_are_refused(text):
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_fingerprint(text)


def test_the_pinned_ca_is_taken_from_the_chain_the_gateway_presents(tls_server):
    pki, address = tls_server
    assert pinned_ca_pem(address, _sha256(pki.ca_cert)) == pki.ca_pem


def test_a_pin_no_presented_certificate_matches_is_refused_and_says_what_to_do(tls_server):
    _, address = tls_server
    other_ca = make_pki().ca_cert
    with pytest.raises(PinError, match="copy the command again from the provider page") as failure:
        pinned_ca_pem(address, _sha256(other_ca))
    assert format_fingerprint(_sha256(other_ca)) in str(failure.value)


def test_pinning_the_leaf_instead_of_the_ca_is_refused(tls_server):
    from cryptography import x509

    pki, address = tls_server
    leaf = x509.load_pem_x509_certificate(pki.server_cert_pem)
    with pytest.raises(PinError, match="is not a CA"):
        pinned_ca_pem(address, _sha256(leaf))


def test_an_unreachable_gateway_is_explained():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PinError, match=r"cannot reach the gateway at 127\.0\.0\.1:.*check the --gateway address"):
        pinned_ca_pem(f"127.0.0.1:{port}", b"\0" * 32, timeout=2)


def test_the_flag_is_parsed_and_excludes_a_ca_file(tmp_path, capsys):
    base = ["--gateway", "gw.example:50051", "--state-dir", str(tmp_path / "s"), "--enroll-token", "jne_x"]
    config = parse_config([*base, "--ca-fingerprint", "sha256:" + "cd" * 32])
    assert config.ca_fingerprint == bytes.fromhex("cd" * 32)
    assert parse_config(base).ca_fingerprint is None
    ca = tmp_path / "ca.pem"
    ca.write_bytes(make_pki().ca_pem)
    with pytest.raises(SystemExit) as exit_:
        parse_config([*base, "--ca-fingerprint", "sha256:" + "cd" * 32, "--ca-cert", str(ca)])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config([*base, "--ca-fingerprint", "sha256:nothex"])
    assert "64 hex digits" in capsys.readouterr().err
