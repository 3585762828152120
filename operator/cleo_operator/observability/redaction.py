"""One redactor for every text that leaves the operator: logs, Events, status, exceptions.

Why one, and why here: a message reaches people through several doors (a log line, an
Event, a condition's message, an exception a library raised quoting a server or a tool),
and each door once had its own idea of what a secret looks like. Now every door calls
`redact`, which does two things:

- replaces the secrets the caller knows (a password it just used) wherever they occur,
  also URL-encoded and base64-encoded (a Kubernetes Secret's data), with ``<redacted>``;
- replaces whatever *looks* like a credential with ``***``: the value after any key whose
  name says it holds one (``password``, ``PGPASSWORD``, ``AWS_SECRET_ACCESS_KEY``,
  ``secretAccessKey``, ``api-key``, ``token``, ``signature``, ``credential``, ...), in any
  case style, quoted or not, with or without spaces around ``=`` or ``:`` (conninfo, env,
  JSON, Python reprs, YAML, query strings); the password in a URL's user info; the value
  of an ``Authorization`` header (Bearer, Basic, AWS4-HMAC-SHA256 ...); bearer tokens;
  PEM private keys.

It lives in the lowest layer that needs it (observability; ``api`` has no caller), so every
layer above imports this one implementation. `clip` redacts and then cuts a message to the
length that status fields and Events take.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote

__all__ = ["MASK", "MESSAGE_LIMIT", "REDACTED", "clip", "holds_secret", "redact"]

REDACTED: Final = "<redacted>"
"""What a known secret (one the caller passed) is replaced with."""

MASK: Final = "***"
"""What a value that looks like a credential is replaced with."""

MESSAGE_LIMIT: Final = 1024
"""Condition, step and Event messages are cut to this many characters."""

# Names of secrets, not secrets.
_SECRET_WORDS = "|".join(
    (
        r"pass(?:word|wd|phrase)",
        r"pwd|secret|token|api[-_ ]?key|private[-_]?key|access[-_]?key",
        r"credentials?|signature|authorization|auth[-_]?key|session[-_]?key|client[-_]?key",
        r"database[-_]?url|dsn|conn(?:ection)?[-_]?(?:string|info|uri|url)",
    )
)
# A key is an identifier that contains one of the words (snake, camel, kebab, upper case,
# dotted, with a prefix such as PG, AWS_ or X-Amz-).
_KEY = rf"[A-Za-z0-9_.-]*(?:{_SECRET_WORDS})[A-Za-z0-9_.-]*"
# Identifiers that name a secret rather than hold one: their values are kept.
_NOT_A_VALUE = re.compile(
    r"(?i)(?:name|names|ref|namespace|file|path|id|version|type|kind|policy|length|size"
    r"|count|set|expired|required|missing|rotation|rotated|fingerprint|period|interval"
    r"|seconds|timestamp|time|enabled|request)$"
)
# Field paths of the operator's own messages that name a Kubernetes Secret *object*
# ("sites.main.adminSecret: not set", "spec.destination.s3.credentialsSecret: ..."): dotted,
# ending in a camelCase ...Secret. What follows them is prose or a name.
_SECRET_OBJECT = re.compile(r"\.[a-z][A-Za-z0-9]*Secret$")
_VALUE = (
    r"\"(?:[^\"\\]|\\.)*\"?"  # double-quoted (JSON), maybe cut short
    r"|'(?:[^'\\]|\\.|'')*'?"  # single-quoted (conninfo, SQL, Python repr)
    r"|[^\s\"',;&<>{}\[\]()]+"  # bare (env, conninfo, query strings, YAML)
)
_KEY_VALUE = re.compile(
    rf"(?i)(?P<lead>(?<![A-Za-z0-9])[\"']?)(?P<key>{_KEY})(?P<sep>[\"']?\s*(?::=|=>?|:)\s*)"
    rf"(?P<value>{_VALUE})"
)
_AUTHORIZATION = re.compile(
    r"(?i)(?P<head>\bauthorization[\"']?\s*[:=]\s*)(?P<quote>[\"']?)(?P<value>[^\r\n\"']+)"
)
_URL_PASSWORD = re.compile(r"(?i)(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
_BEARER = re.compile(r"(?i)\b(?P<head>bearer\s+)[A-Za-z0-9._~+/=-]+")
_OPTION = re.compile(
    rf"(?i)(?P<head>(?<![A-Za-z0-9])--?[a-z0-9_-]*(?:{_SECRET_WORDS})[a-z0-9_-]*\s+)(?!--)\S+"
)
_PEM_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)


def _secret_forms(secret: str) -> list[str]:
    forms = [secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()]
    return sorted({form for form in forms if form}, key=len, reverse=True)


def _masked_value(value: str) -> str:
    if value[:1] in ("'", '"'):
        return value[0] + MASK + value[0]
    return MASK


_WHOLE_KEY = re.compile(rf"(?i){_KEY}")


def holds_secret(key: str) -> bool:
    """Whether a field named ``key`` holds a credential (``password``, ``apiKey``...)."""
    return bool(_WHOLE_KEY.fullmatch(key)) and not _names_a_secret(key)


def _names_a_secret(key: str) -> bool:
    return bool(_NOT_A_VALUE.search(key) or _SECRET_OBJECT.search(key))


def _key_value(match: re.Match[str]) -> str:
    key = match["key"]
    if _names_a_secret(key) or match["value"] == MASK:
        return match[0]
    return f"{match['lead']}{key}{match['sep']}{_masked_value(match['value'])}"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without the given ``secrets`` and without anything that looks like one."""
    for secret in secrets:
        if secret:
            for form in _secret_forms(secret):
                text = text.replace(form, REDACTED)
    text = _PEM_KEY.sub(MASK, text)
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _AUTHORIZATION.sub(rf"\g<head>\g<quote>{MASK}", text)
    text = _BEARER.sub(rf"\g<head>{MASK}", text)
    text = _OPTION.sub(rf"\g<head>{MASK}", text)
    return _KEY_VALUE.sub(_key_value, text)


def clip(message: str, limit: int = MESSAGE_LIMIT, *, secrets: Iterable[str | None] = ()) -> str:
    """``message`` redacted, then cut to ``limit`` characters (with an ellipsis when cut)."""
    message = redact(message, secrets)
    return message if len(message) <= limit else message[: limit - 1] + "…"
