"""The operator compares SCRAM verifiers only of its own form: no tenant-chosen PBKDF2 cost."""

from __future__ import annotations

import base64
import time

import pytest

from cleo_operator.data.scram import (
    SCRAM_ITERATIONS,
    is_operators_form,
    scram_sha256_verifier,
    verifier_iterations,
    verifier_matches,
)

PASSWORD = "correct horse battery staple"
SALT = b"0123456789abcdef"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_own_verifier_matches_and_another_password_does_not() -> None:
    verifier = scram_sha256_verifier(PASSWORD)
    assert is_operators_form(verifier)
    assert verifier_matches(PASSWORD, verifier)
    assert not verifier_matches(PASSWORD + "!", verifier)


@pytest.mark.parametrize("iterations", [1, 4095, 4097, 2**20, 2**31 - 1])
def test_a_verifier_of_the_right_password_with_another_count_does_not_match(
    iterations: int,
) -> None:
    # Made from the right password, so only the count differs; 2^31-1 is never derived.
    if iterations <= 2**20:
        verifier = scram_sha256_verifier(PASSWORD, salt=SALT, iterations=iterations)
    else:
        verifier = f"SCRAM-SHA-256${iterations}:{_b64(SALT)}${_b64(b'k' * 32)}:{_b64(b's' * 32)}"
    started = time.monotonic()
    assert not verifier_matches(PASSWORD, verifier)
    assert time.monotonic() - started < 0.5
    assert verifier_iterations(verifier) == iterations
    assert not is_operators_form(verifier)


@pytest.mark.parametrize(
    "verifier",
    [
        None,
        "",
        "md5" + "0" * 32,
        "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5",  # short salt and keys
        f"SCRAM-SHA-256$4096:{_b64(b'x' * 4096)}${_b64(b'k' * 32)}:{_b64(b's' * 32)}",
        f"SCRAM-SHA-256$+4096:{_b64(SALT)}${_b64(b'k' * 32)}:{_b64(b's' * 32)}",
        f"SCRAM-SHA-256$٤٠٩٦:{_b64(SALT)}${_b64(b'k' * 32)}:{_b64(b's' * 32)}",
        f"SCRAM-SHA-256$0:{_b64(SALT)}${_b64(b'k' * 32)}:{_b64(b's' * 32)}",
        "SCRAM-SHA-256$4096:not base64$x:y",
        "SCRAM-SHA-256$4096",
    ],
)
def test_foreign_or_malformed_verifiers_do_not_match(verifier: str | None) -> None:
    assert not verifier_matches(PASSWORD, verifier)
    assert not is_operators_form(verifier)


def test_the_operator_makes_verifiers_with_its_own_count() -> None:
    assert verifier_iterations(scram_sha256_verifier(PASSWORD)) == SCRAM_ITERATIONS
