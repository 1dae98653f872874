"""What counts as an OCI image reference and which environment values are masked."""

import pytest

from marketplace.rentals.services import ENV_NAME, OCI_REFERENCE, hold_amount, is_secret_env


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "docker.io/library/python:3.12",
        "localhost/janction-test-busybox:latest",
        "localhost:5000/team/app_v2.1:v1.0-rc.1",
        "ghcr.io/org/repo/sub__path@sha256:" + "a" * 64,
        "registry.example.com/app:1@sha256:" + "0f" * 32,
    ],
)
def test_valid_oci_references(image):
    assert OCI_REFERENCE.match(image)


@pytest.mark.parametrize(
    "image",
    [
        "",
        "Upper",
        "docker.io/Library/python",
        "a//b",
        "app:",
        ":tag",
        "app@sha256:abc",
        "-lead",
        "app:" + "t" * 129,
        "with space",
        "busybox\n",  # "$" used to match before a trailing newline
        "busybox:1.36\n",
    ],
)
def test_invalid_oci_references(image):
    assert not OCI_REFERENCE.match(image)


def test_secret_names_are_masked_by_pattern_or_by_choice():
    assert is_secret_env("HF_TOKEN") and is_secret_env("db_password") and is_secret_env("AWS_SECRET_ACCESS_KEY")
    assert not is_secret_env("MODE") and is_secret_env("MODE", ["MODE"])


def test_the_hold_rounds_up_to_a_whole_base_unit():
    assert hold_amount(price_per_hour=1, units=1, duration_ms=1) == 1
    assert hold_amount(price_per_hour=3_600_000, units=2, duration_ms=1_500) == 3_000


def test_env_names_refuse_a_trailing_newline():
    assert ENV_NAME.match("EPOCHS") and not ENV_NAME.match("EPOCHS\n")
