"""SCRAM-SHA-256 password verifiers computed on the operator's side.

Why: ``ALTER ROLE ... PASSWORD 'plaintext'`` sends the tenant's password to the server
as statement text, where ``log_statement``, ``log_min_error_statement`` or
pg_stat_statements may record it. Sending the verifier instead (what the server
stores anyway, and what ``psql``'s ``\\password`` does) means the plaintext never
leaves the operator. It also lets the operator check whether a role already has the
wanted password (for a no-op reconcile) without logging in.

The format and the password normalisation follow PostgreSQL exactly
(``src/common/scram-common.c`` and ``src/common/saslprep.c``): ASCII passwords are
used as they are; others go through SASLprep (RFC 4013), and when SASLprep rejects
a password PostgreSQL (server and libpq alike) falls back to its raw UTF-8 bytes.

The stored verifier is tenant-controlled input: a role may set its own password, and with
it any iteration count up to 2^31-1 (half an hour of PBKDF2). So a verifier is compared
only when it has exactly the operator's own form (``SCRAM_ITERATIONS``, a 16-byte salt,
32-byte keys); anything else "does not match" without deriving anything, and the
caller sets the operator's verifier again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import stringprep
import unicodedata
from typing import Final

SCRAM_ITERATIONS: Final = 4096
"""PostgreSQL's default ``scram_iterations``."""

SALT_BYTES: Final = 16
"""PostgreSQL's salt length for new verifiers."""

_KEY_BYTES: Final = 32
OPERATOR_PASSWORD_FORM: Final = re.compile(r"[A-Za-z0-9_-]{43}")
"""What ``secrets.token_urlsafe(32)`` makes: the only passwords the operator ever sets.

Anything else is refused where a password is written into a file or a statement that
reads a ``SCRAM-SHA-256$<iterations>:...`` or ``md5...`` string as a *verifier*
(PgBouncer's auth file, ``ALTER ROLE ... PASSWORD``): a planted verifier with millions of
iterations would make every login run PBKDF2 that long, inside a connect that cannot be
interrupted."""
_MAX_VERIFIER_CHARS: Final = 200
"""Longer than any verifier of the operator's form: not even parsed."""


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL hashes for ``password`` (SASLprep, or raw when it rejects it)."""
    if "\x00" in password:
        raise ValueError("a password must not contain NUL characters")
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    # 1) Map: non-ASCII spaces to SPACE, "commonly mapped to nothing" removed. The
    # space check comes first, as in PostgreSQL: U+200B is in both tables.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else "" if stringprep.in_table_b1(ch) else ch
        for ch in password
    )
    if not mapped:
        return raw
    # 3) and 4) PostgreSQL checks the mapped input (before normalisation); so do we.
    for ch in mapped:
        if _prohibited(ch) or stringprep.in_table_a1(ch):
            return raw
    if any(stringprep.in_table_d1(ch) for ch in mapped):
        if any(stringprep.in_table_d2(ch) for ch in mapped):
            return raw
        if not (stringprep.in_table_d1(mapped[0]) and stringprep.in_table_d1(mapped[-1])):
            return raw
    # 2) Normalise.
    return unicodedata.normalize("NFKC", mapped).encode("utf-8")


def _prohibited(ch: str) -> bool:
    return (
        stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
    )


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return stored_key, server_key


def scram_sha256_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, as ``pg_authid`` holds it."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def verifier_iterations(verifier: str | None) -> int | None:
    """The iteration count of a SCRAM-SHA-256 verifier, or None when it is not one.

    Cheap (no key derivation), for messages about a verifier the operator did not make.
    """
    parsed = _parse(verifier)
    return parsed[0] if parsed else None


def is_operators_form(verifier: str | None) -> bool:
    """Whether ``verifier`` has the form the operator makes (its iterations, salt, keys)."""
    parsed = _parse(verifier)
    return parsed is not None and _operators_form(*parsed)


def verifier_matches(password: str, verifier: str | None) -> bool:
    """Whether ``verifier`` (a stored SCRAM-SHA-256 secret) was made from ``password``.

    Anything else (``None``, an MD5 hash, a malformed value, or a verifier not of the
    operator's own form, such as another iteration count) does not match, so the
    caller sets the password again, which also upgrades old MD5 hashes. PBKDF2 runs
    only with ``SCRAM_ITERATIONS``: never with a count read from the server.
    """
    parsed = _parse(verifier)
    if parsed is None or not _operators_form(*parsed):
        return False
    _, salt, stored, server = parsed
    stored_key, server_key = _keys(password, salt, SCRAM_ITERATIONS)
    return hmac.compare_digest(stored_key + server_key, stored + server)


def _operators_form(iterations: int, salt: bytes, stored: bytes, server: bytes) -> bool:
    return (
        iterations == SCRAM_ITERATIONS
        and len(salt) == SALT_BYTES
        and len(stored) == len(server) == _KEY_BYTES
    )


def _parse(verifier: str | None) -> tuple[int, bytes, bytes, bytes] | None:
    if (
        not verifier
        or len(verifier) > _MAX_VERIFIER_CHARS
        or not verifier.startswith("SCRAM-SHA-256$")
    ):
        return None
    try:
        head, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$")
        iterations_text, salt_text = head.split(":")
        stored_text, server_text = keys.split(":")
        if not iterations_text.isascii() or not iterations_text.isdigit():
            return None
        iterations = int(iterations_text)
        salt = base64.b64decode(salt_text, validate=True)
        stored = base64.b64decode(stored_text, validate=True)
        server = base64.b64decode(server_text, validate=True)
    except ValueError:
        return None
    if iterations < 1:
        return None
    return iterations, salt, stored, server


def is_operator_password(password: str) -> bool:
    """Whether `password` has the form of one the operator made (`OPERATOR_PASSWORD_FORM`)."""
    return OPERATOR_PASSWORD_FORM.fullmatch(password) is not None
