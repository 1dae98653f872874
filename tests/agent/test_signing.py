"""Usage-report signatures: the canonical bytes, signing, and verification as the gateway does it."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.identity import build_csr_pem, generate_private_key
from agent.messages import usage_message
from agent.protocol.signing import canonical_usage_bytes, load_node_public_key, sign_usage_report, verify_usage_report
from agent.state import UsageRecord
from tests.agent.pki import make_pki


def _report(**changes) -> UsageRecord:
    report = UsageRecord("pl-42", 3, 1_700_000_000_000, 1_700_000_010_000, 2, 20_000)
    return dataclasses.replace(report, **changes)


def test_canonical_bytes_follow_the_documented_format():
    assert canonical_usage_bytes(_report()) == b"janction.usage.v1\npl-42\n3\n1700000000000\n1700000010000\n2\n20000\n"


@pytest.mark.parametrize("placement_id", ["", "a\nb", "tab\there", "del\x7f"])
def test_canonical_bytes_refuse_ambiguous_placement_ids(placement_id):
    with pytest.raises(ValueError, match="control characters"):
        canonical_usage_bytes(_report(placement_id=placement_id))


def test_a_signed_protobuf_report_verifies_with_the_public_key_the_certificate_and_pems():
    key = generate_private_key()
    report = _report()
    report.signature = sign_usage_report(key, report)
    message = usage_message(report).usage_report
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert verify_usage_report(key.public_key(), message)
    assert verify_usage_report(public_pem, message)
    assert verify_usage_report(public_pem.decode(), message)
    assert verify_usage_report(key.public_key(), report, report.signature)


def test_verification_with_the_enrolled_certificate():
    pki = make_pki()
    key = generate_private_key()
    certificate_pem = pki.sign_csr(build_csr_pem(key, "host"), "node-1")
    report = _report()
    report.signature = sign_usage_report(key, report)
    assert verify_usage_report(certificate_pem, usage_message(report).usage_report)


@pytest.mark.parametrize(
    "tamper",
    [
        {"placement_id": "pl-43"},
        {"seq": 4},
        {"interval_start_ms": 1_700_000_000_001, "vgpu_milliseconds": 19_998},
        {"interval_end_ms": 1_700_000_020_000, "vgpu_milliseconds": 40_000},
        {"vgpu_count": 3, "vgpu_milliseconds": 30_000},
    ],
)
def test_any_tampered_field_fails_verification(tamper):
    key = generate_private_key()
    report = _report()
    report.signature = sign_usage_report(key, report)
    forged = dataclasses.replace(report, **tamper)
    assert not verify_usage_report(key.public_key(), forged)


def test_inconsistent_or_unsigned_or_foreign_reports_fail():
    key = generate_private_key()
    inflated = _report(vgpu_milliseconds=99_999)
    inflated.signature = sign_usage_report(key, inflated)
    assert not verify_usage_report(key.public_key(), inflated), "vGPU-ms must equal count x duration"
    assert not verify_usage_report(key.public_key(), _report())
    report = _report()
    report.signature = sign_usage_report(generate_private_key(), report)
    assert not verify_usage_report(key.public_key(), report)
    flipped = dataclasses.replace(report, signature=report.signature[:-1] + bytes([report.signature[-1] ^ 1]))
    assert not verify_usage_report(key.public_key(), flipped)


def test_keys_other_than_p256_are_rejected():
    with pytest.raises(ValueError, match="P-256"):
        load_node_public_key(ec.generate_private_key(ec.SECP384R1()).public_key())
