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
  PEM private keys; a password word and its value separated by a space only (SQL's
  ``PASSWORD 'x'``), except a word of prose after a lower-case one; a keyring Secret's data
  (``keyring.json``, ``v1.key``).

It lives in the lowest layer (core), so every layer above, the error base included, imports
this one implementation. `clip` redacts and then cuts a message to the length that status
fields and Events take.

It runs in time linear in the text, and reads at most `INPUT_LIMIT` characters of it (the
known secrets are replaced in all of it): the text may be a tenant's, and see `_KEY`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote

__all__ = [
    "CUT",
    "CUT_START",
    "INPUT_LIMIT",
    "LOG_MESSAGE_LIMIT",
    "MASK",
    "MESSAGE_LIMIT",
    "REDACTED",
    "clip",
    "holds_secret",
    "redact",
]

REDACTED: Final = "<redacted>"
"""What a known secret (one the caller passed) is replaced with."""

MASK: Final = "***"
"""What a value that looks like a credential is replaced with."""

MESSAGE_LIMIT: Final = 1024
"""Condition, step and Event messages are cut to this many characters."""

LOG_MESSAGE_LIMIT: Final = 4096
"""A plain log line's message is cut to this many characters (`observability.logs`)."""

INPUT_LIMIT: Final = 16 << 10
"""`redact` reads at most this many characters of a text and cuts it there (with `CUT`):
a tool's or server's message may quote a tenant's data of any length."""

CUT: Final = " …(cut)"
"""What ends a text whose end `redact` cut off."""

CUT_START: Final = "(cut)… "
"""What starts a text whose start `redact` cut off."""

# Names of secrets, not secrets.
_SECRET_WORDS = "|".join(
    (
        r"pass(?:word|wd|phrase)",
        r"pwd|secret|token|api[-_ ]?key|private[-_]?key|access[-_]?key",
        r"credentials?|signature|authorization|auth[-_]?key|session[-_]?key|client[-_]?key",
        r"database[-_]?url|dsn|conn(?:ection)?[-_]?(?:string|info|uri|url)",
        # The data keys of a keyring Secret: its index and each version's key.
        r"keyring\.json|(?<![A-Za-z0-9])v[0-9]+\.key(?![A-Za-z0-9])",
    )
)
# A key is an identifier that contains one of the words (snake, camel, kebab, upper case,
# dotted, with a prefix such as PG, AWS_ or X-Amz-), and `api key` with its space.
#
# Every pattern here runs in time linear in the text: the text may be a tenant's (a
# server's error quoting the tenant's data, a tool's stderr), and a redaction that takes
# seconds holds the interpreter lock, so the leader election cannot renew and every
# tenant stops. Hence (1) a match starts only where an identifier starts (the lookbehind
# `(?<![A-Za-z0-9_.-])`), never after each `.`, `_` or `-` inside it, and (2) an
# identifier is looked through once for a secret word (a lookahead, which never
# backtracks once it matched) and then taken whole (possessive `*+`), never tried again
# at each shorter length: `a.a.a...` or `passwordpassword...` of 200 KB take milliseconds.
_KEY_CHAR = r"(?:[A-Za-z0-9_.-]|(?<=api)[ ](?=key))"
_KEY = rf"(?={_KEY_CHAR}*?(?:{_SECRET_WORDS})){_KEY_CHAR}*+"
# Where an identifier starts: not inside one, nor at the `key` of an `api key`.
_KEY_START = r"(?<![A-Za-z0-9_.-])(?!(?<=api )key)"
# Identifiers that name a secret rather than hold one: their values are kept.
_NOT_A_VALUE = re.compile(
    r"(?i)(?:name|names|ref|namespace|file|path|id|version|type|kind|policy|rotation"
    r"|fingerprint|request)$"
)
# Identifiers of a fact about a secret (`passwordSet: true`, `tokenExpired: 2026-...`,
# `passwordLength: 32`): their values are kept only when they look like such a fact, so that
# `password_set=hunter2` is still masked. A yes-or-no fact takes a boolean or a time, a
# measure a number, duration or time.
_A_FACT = re.compile(r"(?i)(?:set|expired|required|missing|rotated|enabled)$")
_A_MEASURE = re.compile(r"(?i)(?:length|size|count|period|interval|seconds|timestamp|time)$")
_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}[0-9:.]*(?:Z|[+-][0-9:]+)?"
_FACT_VALUE = re.compile(rf"(?i)([\"']?)(?:true|false|yes|no|null|none|nil|{_TIME})\1")
_MEASURE_VALUE = re.compile(rf"(?i)([\"']?)(?:[0-9]+(?:\.[0-9]+)?[a-z]{{0,3}}|{_TIME})\1")
# The operator's own field paths that name a Kubernetes Secret *object* ("sites.main.adminSecret:
# not set", "spec.destination.gcs.credentialsSecret: ..."). What follows them is prose or a
# name. Only these: `auth.clientSecret: ...` is a value.
_SECRET_OBJECT = re.compile(
    r"(?:^|\.)(?:sites\.[A-Za-z0-9_-]+\.adminSecret|destination\.(?:s3|gcs|azure)\.credentialsSecret)$"
)
# A password word and its value separated by a space only: SQL (`PASSWORD 'x'`), config
# files (`passwd x`). In lower case the word is also prose ("password authentication failed
# for user"): then the words in _PROSE are kept; in upper case (SQL) nothing is.
_SPACED_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<head>(?P<key>[A-Za-z0-9_]*(?i:pass(?:word|wd|phrase)|pwd))"
    r"[ \t]+)(?P<value>\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.|'')*'?|[^\s\"',;&<>{}\[\]()=:]+)"
)
_PROSE_WORDS = (
    "a an and are as at auth authentication based be been by can cannot change changed "
    "changes characters contains could did does encrypted encryption expired expires field "
    "fields file for from given has hash hashes have here if in is it length matched "
    "matches may method methods mismatch missing must needed needs no not of on or policy "
    "prompt protected provided required reset rotated rotation set should stored supplied "
    "that the this to too unset update updated verifier was when will with without would "
    "never last stays"
)
_PROSE: Final = frozenset(_PROSE_WORDS.split())
_VALUE = (
    r"\{(?:[^{}]|\{[^{}]*\}?)*\}?"  # an object (a keyring's index), maybe cut short
    r"|\"(?:[^\"\\]|\\.)*\"?"  # double-quoted (JSON), maybe cut short
    r"|'(?:[^'\\]|\\.|'')*'?"  # single-quoted (conninfo, SQL, Python repr)
    r"|[^\s\"',;&<>{}\[\]()]+"  # bare (env, conninfo, query strings, YAML)
)
_SEP = r"\s*(?::=|=>?|:)\s*"
# A key and its separator; the value after it is read by `_VALUE_AT` only when it is to
# be masked or looked at (`_key_values`).
_KEY_SEP = re.compile(rf"(?i)(?P<lead>{_KEY_START}[\"']?)(?P<key>{_KEY})(?P<sep>[\"']?{_SEP})")
_VALUE_AT = re.compile(_VALUE)
_AUTHORIZATION = re.compile(
    r"(?i)(?P<head>\bauthorization[\"']?\s*[:=]\s*)(?P<quote>[\"']?)(?P<value>[^\r\n\"']+)"
)
# A scheme is short (at most 32 characters), and a password does not run on over the next
# `://`: otherwise each of `a://:a://:...` would read to the end of the text.
_URL_PASSWORD = re.compile(
    r"(?i)(?P<head>\b[a-z][a-z0-9+.-]{0,31}://[^:/@\s]*:)(?:[^@\s:]|:(?!//))+@"
)
_BEARER = re.compile(r"(?i)\b(?P<head>bearer\s+)[A-Za-z0-9._~+/=-]+")
# A negated flag (`--no-password`) takes no value: the next word is another option.
_OPTION = re.compile(rf"(?i)(?P<head>{_KEY_START}--?(?!-?no-){_KEY}\s+)\S+")
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
    return bool(
        _NOT_A_VALUE.search(key)
        or _A_FACT.search(key)
        or _A_MEASURE.search(key)
        or _SECRET_OBJECT.search(key)
    )


def _key_values(text: str) -> str:
    """Mask the value after each key that holds a secret, in one pass over ``text``."""
    out: list[str] = []
    pos = 0
    while (match := _KEY_SEP.search(text, pos)) is not None:
        key, after = match["key"], match.end()
        if _NOT_A_VALUE.search(key) or _SECRET_OBJECT.search(key):
            # A name is kept, and what follows it is read on as text: a bare value may run
            # on into a secret (`secretName = password=x`, `secretName=password=x`).
            out.append(text[pos:after])
            pos = after
            continue
        value = _VALUE_AT.match(text, after)
        if value is None:
            out.append(text[pos:after])
            pos = after
            continue
        if (
            value[0] == MASK
            or (_A_FACT.search(key) and _FACT_VALUE.fullmatch(value[0]))
            or (_A_MEASURE.search(key) and _MEASURE_VALUE.fullmatch(value[0]))
        ):
            out.append(text[pos : value.end()])
        else:
            out.append(text[pos:after] + _masked_value(value[0]))
        pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def _spaced_password(match: re.Match[str]) -> str:
    value = match["value"]
    if value == MASK:
        return match[0]
    if not match["key"].isupper() and value.lower() in _PROSE:
        return match[0]
    return f"{match['head']}{_masked_value(value)}"


def _bounded(text: str, *, tail: bool) -> str:
    """``text`` cut to its first (or last) `INPUT_LIMIT` characters, without the word the
    cut went through.

    The word is dropped because the patterns recognise some secrets only whole: the start
    of a URL's password, cut before its ``@``, would otherwise be kept.
    """
    if len(text) <= INPUT_LIMIT:
        return text
    if tail:
        kept = text[-INPUT_LIMIT:]
        if not (kept[0].isspace() or text[-INPUT_LIMIT - 1].isspace()):
            words = kept.split(None, 1)
            kept = words[1] if len(words) == 2 else ""
        return f"{CUT_START}{kept}"
    kept = text[:INPUT_LIMIT]
    if not (kept[-1].isspace() or text[INPUT_LIMIT].isspace()):
        words = kept.rsplit(None, 1)
        kept = words[0] if len(words) == 2 else ""
    return f"{kept}{CUT}"


def redact(text: str, secrets: Iterable[str | None] = (), *, tail: bool = False) -> str:
    """``text`` without the given ``secrets`` and without anything that looks like one.

    The known secrets are replaced in the whole text; the rest is looked for in its first
    `INPUT_LIMIT` characters (its last ones with ``tail``: a log's or a tool's last lines
    say what went wrong), and the text is cut there.
    """
    for secret in secrets:
        if secret:
            for form in _secret_forms(secret):
                text = text.replace(form, REDACTED)
    text = _bounded(text, tail=tail)
    text = _PEM_KEY.sub(MASK, text)
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}@", text)
    text = _AUTHORIZATION.sub(rf"\g<head>\g<quote>{MASK}", text)
    text = _BEARER.sub(rf"\g<head>{MASK}", text)
    text = _OPTION.sub(rf"\g<head>{MASK}", text)
    text = _SPACED_PASSWORD.sub(_spaced_password, text)
    return _key_values(text)


def clip(message: str, limit: int = MESSAGE_LIMIT, *, secrets: Iterable[str | None] = ()) -> str:
    """``message`` redacted, then cut to ``limit`` characters (with an ellipsis when cut).

    Redacted first, so that the cut cannot leave the start of a secret that only the whole
    would have been recognised by; `redact` itself reads at most `INPUT_LIMIT` characters.
    """
    message = redact(message, secrets)
    return message if len(message) <= limit else message[: limit - 1] + "…"
