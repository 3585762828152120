"""Client-side SCRAM verifiers, checked against what PostgreSQL itself computes."""

from __future__ import annotations

import base64
import secrets

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from cleo_operator.data.scram import saslprep, scram_sha256_verifier, verifier_matches
from tests.harness.postgres import PostgresServer

pytestmark = pytest.mark.postgres

# Any text PostgreSQL can store as a password: no NUL, no lone surrogates, and not
# something the server would take for an already hashed password.
# Characters where SASLprep does something. Those SASLprep accepts are mixed into
# ordinary text ("clean"); the others make it fall back to the raw bytes ("wild").
SASLPREP_ACCEPTS = (
    "\u00a0\u1680\u2000\u200b\u3000"  # non-ASCII spaces (U+200B is also "to nothing")
    "\u00ad\u034f\u200c\u200d\u2060\ufe0f\ufeff"  # mapped to nothing
    "\ufb01\u2168\u2126\u00bd\uff21\u00e9\u00df"  # changed (or not) by NFKC
)
SASLPREP_REJECTS = (
    "\x07\x7f\u0080\u2028\ue000\U000f0000\ufffe"  # prohibited
    "\u05d0\u0627\u0660"  # right-to-left (a problem next to left-to-right text)
    "\u0221\U0001f600"  # unassigned in Unicode 3.2
)
clean = st.text(
    alphabet=st.sampled_from("abcXYZ019 -_!" + SASLPREP_ACCEPTS), min_size=1, max_size=16
)
wild = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        st.sampled_from(SASLPREP_ACCEPTS + SASLPREP_REJECTS),
    ),
    min_size=1,
    max_size=16,
)
passwords = st.one_of(clean, wild).filter(lambda p: not p.startswith(("md5", "SCRAM-SHA-256$")))


@pytest.fixture(scope="module")
def probe_role(postgres_server: PostgresServer) -> str:
    role = f"scram_probe_{secrets.token_hex(4)}"
    postgres_server.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    return role


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(password=passwords)
def test_verifiers_agree_with_the_server(
    postgres_server: PostgresServer, probe_role: str, password: str
) -> None:
    """The server hashes the plaintext; our check must accept exactly that password."""
    with postgres_server.connect() as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(probe_role), sql.Literal(password)
            )
        )
        row = conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (probe_role,)
        ).fetchone()
    assert row is not None
    stored = row[0]
    assert verifier_matches(password, stored)
    assert not verifier_matches(password + "x", stored)
    # Same salt and iterations as the server's: our verifier must be byte-identical.
    iterations, salt_b64 = stored.split("$")[1].split(":")
    ours = scram_sha256_verifier(
        password, salt=base64.b64decode(salt_b64), iterations=int(iterations)
    )
    assert ours == stored


def test_our_verifier_lets_libpq_log_in(postgres_server: PostgresServer, probe_role: str) -> None:
    for password in ("plain-ascii", "ﬁ\u00a0Straße\u200b", "\u05d0\u05d1", "Ab\u05d0"):
        with postgres_server.connect() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(probe_role), sql.Literal(scram_sha256_verifier(password))
                )
            )
        with psycopg.connect(
            postgres_server.dsn(user=probe_role, password=password), connect_timeout=5
        ) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (probe_role,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(
                postgres_server.dsn(user=probe_role, password=password + "!"), connect_timeout=5
            )


def test_saslprep_cases() -> None:
    assert saslprep("I\u00adX") == b"IX"  # soft hyphen maps to nothing
    assert saslprep("\u2168") == b"IX"  # NFKC
    assert saslprep("a\u00a0b") == b"a b"  # non-ASCII space maps to SPACE
    assert saslprep("\u00e9\u200b") == "\u00e9 ".encode()  # U+200B: a space, not nothing
    assert saslprep("a\x07b") == b"a\x07b"  # ASCII is taken as it is, controls too
    assert saslprep("\u00e9\x07") == "\u00e9\x07".encode()  # prohibited: raw bytes
    assert saslprep("\u05d0a") == "\u05d0a".encode()  # bidi rule broken: raw bytes
    with pytest.raises(ValueError, match="NUL"):
        saslprep("a\x00b")


def test_verifier_matches_rejects_other_formats() -> None:
    good = scram_sha256_verifier("pw")
    assert verifier_matches("pw", good)
    for other in (None, "", "md5" + "0" * 32, "SCRAM-SHA-256$x", good.replace("$", "$$", 1)):
        assert not verifier_matches("pw", other)
