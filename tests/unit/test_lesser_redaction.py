"""The one redactor: every spelling of a secret goes, ordinary text stays (property tests)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cleo_operator
from cleo_operator.backup import errors as backup_errors
from cleo_operator.core.redaction import MASK, REDACTED, clip, holds_secret, redact
from cleo_operator.data import errors as data_errors
from cleo_operator.observability import logs
from cleo_operator.reconcile import status

# A secret value: long enough that it cannot occur in the surrounding text by chance.
SECRETS = st.text(
    alphabet=st.sampled_from("ABCDEFGHJKMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz0123456789_~+/=.-"),
    min_size=10,
    max_size=40,
)
WORDS = [
    "password", "passwd", "pwd", "secret", "token", "api key", "private key", "access key",
    "secret access key", "session token", "client secret", "auth token", "credential",
    "signature", "database url", "connection string", "passphrase",
    # A secret's key that ends like a name of a fact about a secret ("...Set", "...Time").
    "password set", "token expired", "secret required",
]  # fmt: skip
PREFIXES = ["", "pg", "aws", "db", "x amz", "admin", "my app"]
# Dotted paths in front of a key: `auth.clientSecret` is a value, `spec.adminSecret` a name.
PATHS = ["", "auth.", "config.oauth.", "spec."]


def spelled(words: list[str], style: str) -> str:
    if style == "snake":
        return "_".join(words)
    if style == "upper":
        return "_".join(words).upper()
    if style == "kebab":
        return "-".join(words)
    if style == "title-kebab":
        return "-".join(w.capitalize() for w in words)
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    return "".join(words).upper()  # PGPASSWORD


@st.composite
def secret_keys(draw: st.DrawFn) -> str:
    words = (draw(st.sampled_from(PREFIXES)) + " " + draw(st.sampled_from(WORDS))).split()
    style = draw(
        st.sampled_from(["snake", "upper", "kebab", "title-kebab", "camel", "pascal", "joined"])
    )
    return draw(st.sampled_from(PATHS)) + spelled(words, style)


@st.composite
def assignments(draw: st.DrawFn, secret: str) -> str:
    """``key <sep> value`` in one of the formats logs, tools and servers write."""
    key = draw(secret_keys())
    fmt = draw(
        st.sampled_from(
            ["bare", "single", "double", "json", "repr", "yaml", "query", "cli", "header"]
        )
    )
    sep = draw(st.sampled_from(["=", " = ", ": ", ":", " := "[1:], " "]))
    if sep == " " and fmt in ("bare", "single", "double", "header"):
        # Separated by a space only: SQL (`PASSWORD 'x'`), config files (`passwd x`).
        key = draw(st.sampled_from(["password", "passwd", "PASSWORD", "PGPASSWORD", "pwd"]))
    if fmt == "bare":
        return f"{key}{sep}{secret}"
    if fmt == "single":
        return f"{key}{sep}'{secret}'"
    if fmt == "double":
        return f'{key}{sep}"{secret}"'
    if fmt == "json":
        return json.dumps({key: secret, "user": "cleo_acme"})
    if fmt == "repr":
        return repr({key: secret})
    if fmt == "yaml":
        return f"{key}:\n  {secret}"
    if fmt == "query":
        return f"https://s3.example/b/o?X-Amz-Date=1&{key}={quote(secret, safe='')}&x=1"
    if fmt == "cli":
        return f"--{key.lower().replace('_', '-')} {secret}"
    return f"{key}: {secret}"


PLAIN = st.lists(
    st.sampled_from(
        ["site", "main", "failed:", "connection", "to", "server", "at", "127.0.0.1,", "port",
         "5432", "the", "role", "cleo_acme", "database", "was", "created", "(3", "rows)",
         "FATAL:", "user", "=", "host=db", "dbname=cleo_acme", "sslmode=verify-full",
         "Ready", "True", "reason:", "Connected", "secretName", "password authentication"]
    ),
    min_size=1,
    max_size=12,
).map(" ".join)  # fmt: skip


@pytest.mark.security
@settings(max_examples=400, deadline=None)
@given(secret=SECRETS, data=st.data(), before=PLAIN, after=PLAIN)
def test_no_spelling_of_a_secret_survives(
    secret: str, data: st.DataObject, before: str, after: str
) -> None:
    assume(secret not in before and secret not in after)
    text = f"{before} {data.draw(assignments(secret))}\n{after}"
    out = redact(text)
    assert secret not in out
    assert quote(secret, safe="") not in out or quote(secret, safe="") == MASK
    assert before.split(maxsplit=1)[0] in out


@settings(max_examples=300, deadline=None)
@given(text=PLAIN)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


@settings(max_examples=200, deadline=None)
@given(secret=SECRETS, text=PLAIN)
def test_known_secrets_go_in_every_encoding(secret: str, text: str) -> None:
    assume(secret not in text)
    b64 = base64.b64encode(secret.encode()).decode()
    out = redact(f"{text} {secret} {quote(secret, safe='')} data={{x: {b64}}}", [secret])
    assert secret not in out
    assert b64 not in out
    assert REDACTED in out


@pytest.mark.security
@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("psql: password='s3cr3t-P4ss' host=db", "s3cr3t-P4ss"),
        ("conninfo: host=db password=s3cr3t-P4ss dbname=x", "s3cr3t-P4ss"),
        ('{"password": "s3cr3t-P4ss", "user": "u"}', "s3cr3t-P4ss"),
        ('{"password":"s3\\"cr3t-P4ss"}', "cr3t-P4ss"),
        ("env PGPASSWORD=s3cr3t-P4ss pg_dump", "s3cr3t-P4ss"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"),
        ("secretAccessKey: wJalrXUtnFEMI", "wJalrXUtnFEMI"),
        ("postgresql://cleo_acme:s3cr3t-P4ss@db:5432/cleo_acme", "s3cr3t-P4ss"),
        ("Authorization: Bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/2025/eu/s3/aws4_request, "
            "SignedHeaders=host, Signature=0123abcdef9876",
            "0123abcdef9876",
        ),
        ("?X-Amz-Security-Token=FQoGZXIvYXdzE&X-Amz-Signature=ab12", "FQoGZXIvYXdzE"),
        ("apiKey = sk-live-1234567", "sk-live-1234567"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
            "MIIEvQIBADANBg",
        ),
        ("DATABASE_URL=cG9zdGdyZXNxbDovL3U6cHdAaA==", "cG9zdGdyZXNxbDovL3U6cHdAaA=="),
        ("auth.clientSecret: hunter2", "hunter2"),
        ("passwd hunter2", "hunter2"),
        ("ALTER ROLE x PASSWORD zzzz", "zzzz"),
        ("password_set=zz", "zz"),
        ('keyring.json: {"current": 1, "versions": {"1": "c2VjcmV0a2V5"}}', "c2VjcmV0a2V5"),
        ("data: {keyring.json: {current: 1}, v1.key: c2VjcmV0a2V5}", "c2VjcmV0a2V5"),
        ("v1.key=c2VjcmV0a2V5", "c2VjcmV0a2V5"),
        ("V12.KEY: c2VjcmV0a2V5", "c2VjcmV0a2V5"),
        # Found by the property test: a value that starts like an option is still a value.
        ("password --00000000", "--00000000"),
        ("pg_dump --password --00000000 --host db", "--00000000"),
    ],
)
def test_known_spellings(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_a_negated_password_flag_takes_no_value() -> None:
    assert redact("pg_dump --no-password --host db") == "pg_dump --no-password --host db"


@pytest.mark.parametrize(
    "text",
    [
        "secretName: cleo-database passwordRotationPeriod: 30d adminSecret.namespace: ops",
        "sites.main.adminSecret: not set; name the Secret with the site admin's password",
        "spec.destination.s3.credentialsSecret: Secret ns/creds has no key",
        "spec.destination.gcs.credentialsSecret: Secret ns/gcs-key lacks service-account.json",
        "spec.destination.azure.credentialsSecret: Secret ns/sas must hold exactly one key",
        "passwordSet: true tokenExpired: 2026-03-31T23:30:00Z passwordRotationPeriod: 30d",
        "password authentication failed for user cleo_acme",
        "Secret cleo-keyring: version 3 is missing",
    ],
)
def test_names_of_secrets_are_not_values(text: str) -> None:
    assert redact(text) == text


def test_holds_secret_tells_fields_apart() -> None:
    assert holds_secret("password")
    assert holds_secret("AWS_SECRET_ACCESS_KEY")
    assert holds_secret("apiKey")
    assert not holds_secret("secretName")
    assert holds_secret("auth.clientSecret")
    assert holds_secret("keyring.json")
    assert holds_secret("v3.key")
    assert not holds_secret("sites.main.adminSecret")
    for store in ("s3", "gcs", "azure"):
        assert not holds_secret(f"spec.destination.{store}.credentialsSecret")
    assert holds_secret("spec.destination.other.credentialsSecret")
    assert not holds_secret("user")


def test_every_redact_and_clip_is_the_one_implementation() -> None:
    assert data_errors.redact is redact
    assert backup_errors.redact is redact
    assert logs.redact is redact
    assert status.clip is clip
    package = Path(cleo_operator.__file__).parent
    own = package / "core" / "redaction.py"
    defined = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        if path != own
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*def (redact|clip)\(", line)
        or re.match(r"\s*[A-Z_]*(MESSAGE_LIMIT|MAX_MESSAGE)[A-Z_]*\s*(:[^=]*)?=", line)
    ]
    assert defined == [], "redact, clip and the message limit live in core/redaction.py only"


def test_clip_redacts_before_it_cuts() -> None:
    out = clip("x" * 1010 + " password=abcdefghijklmnopqrstuvwxyz")
    assert "abcdefghijklmn" not in out
    assert len(out) <= 1024
    long = clip("y" * 5000)
    assert len(long) == 1024
    assert long.endswith("…")


def test_call_sites_keep_their_replacements() -> None:
    # Known secrets become <redacted> (errors); patterns become *** (logs), as before.
    assert data_errors.redact("login pw123456 failed", ["pw123456"]) == "login <redacted> failed"
    assert re.fullmatch(r"token=\*\*\*", redact("token=abcdef123"))


@pytest.mark.security
@pytest.mark.parametrize(
    "text",
    [
        "secretName = password = 0000000000",
        "secretRef: token: 0000000000",
        "credentialsSecret=apiKey=0000000000",
    ],
)
def test_a_kept_name_never_swallows_the_assignment_after_it(text: str) -> None:
    # Found by hypothesis: the name's value was the next key, so its secret went unmasked.
    assert "0000000000" not in redact(text)


@pytest.mark.security
@pytest.mark.parametrize(
    "text",
    [
        "password=accesskeyid=0000000000",
        "PGPASSWORD=secretName:0000000000",
        "password=tokenlength=0000000000",
        "password=Pwd:0000000000",
    ],
)
def test_a_credential_whose_value_looks_like_an_assignment_is_masked_whole(text: str) -> None:
    # Found in review: a value holding `name=` or `key:` must not end the credential early.
    out = redact(text)
    assert "0000000000" not in out
    assert out.endswith("=***")
