"""What a migration's pod says, read as hostile text: the schema revision and the last lines.

Why apart from the part: the termination message is written by the migration, that is by
the tenant's image, and every byte of it may be an attack on whoever reads status
(control characters for a terminal, a fake second line, a credential to leak, a megabyte).
The rules for reading it are here, pure and tested alone:

- **The revision.** A migration reports the schema it left with the *last* line of its
  termination message: ``revision=<id>``, where the id is 1 to 64 letters, digits and
  ``.``, ``_``, ``-``, ``:`` or ``+`` (an Alembic revision, a Flyway version, a date).
  Anything else (no such line, a longer or stranger id, the line not being the last) means
  "no revision reported", never a clipped or cleaned-up one: a revision on status is one
  the migration wrote exactly.
- **The last lines of a failure.** With ``FallbackToLogsOnError`` the kubelet puts the end
  of a failed container's log there. The operator keeps its last `LAST_LINES` lines,
  replaces control characters, passes them through the redactor (a migration that prints
  its ``DATABASE_URL`` must not publish the password on the tenant's status), and clips
  them to `LAST_LINES_LIMIT` characters. Patterns miss a URL the kubelet's tail cut in two
  or a password in a dict: the caller passes every secret value the Job had
  (`secret_values` of its Secrets: passwords, the passwords of URLs, any value of a key
  it does not know to be public), and each occurrence of any `WINDOW` characters in a row
  of one of them is redacted too (a line that prints half a password).
- Only what a pod controlled by the operator's Job (by uid) and wearing the migration's
  labels reports is read at all (`reconcile.migrations`); a pod that merely carries the
  Job's name is anyone's to make.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from cleo_operator.api.objects import KubeObject
from cleo_operator.core.redaction import REDACTED, clip, redact
from cleo_operator.data.sites import CA_KEY
from cleo_operator.kube.secrets import secret_value
from cleo_operator.reconcile.backup_jobs import controlled_by, ended_containers
from cleo_operator.render.migrations import MIGRATION_CONTAINER

__all__ = [
    "LAST_LINES",
    "LAST_LINES_LIMIT",
    "WINDOW",
    "PodReport",
    "last_lines",
    "pod_report",
    "redact_windows",
    "reported_image_id",
    "revision_from_message",
    "secret_values",
]

LAST_LINES: Final = 10
LAST_LINES_LIMIT: Final = 700
"""Characters of a failure's last lines kept (the condition message holds more besides)."""
WINDOW: Final = 8
"""Any run of this many characters of a secret is redacted where it occurs."""
PUBLIC_KEYS: Final = frozenset(
    {"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGSSLMODE", "PGSSLROOTCERT", CA_KEY}
)
"""Keys of the credentials Secret whose values are not secret (whole words of a log)."""
MAX_SECRET_LENGTH: Final = 4096
"""Longer values are redacted whole only (their windows would cost too much)."""
REVISION_PATTERN: Final = re.compile(r"revision=([A-Za-z0-9][A-Za-z0-9._:+-]{0,63})")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def revision_from_message(message: str) -> str | None:
    """The id of a last line ``revision=<id>`` (see the module docstring); else None."""
    lines = message.rstrip("\r\n").split("\n")
    last = lines[-1].rstrip("\r") if lines else ""
    match = REVISION_PATTERN.fullmatch(last)
    return match.group(1) if match else None


def last_lines(message: str, *, secrets: Iterable[str | None] = ()) -> str:
    """The last `LAST_LINES` non-empty lines, control characters replaced, redacted, clipped.

    Clipped from the front: the end of a log says why it failed.
    """
    lines = [_CONTROL.sub("?", line).rstrip() for line in message.splitlines()]
    kept = [line for line in lines if line.strip()][-LAST_LINES:]
    known = [s for s in secrets if s]
    text = redact(redact_windows(" | ".join(kept), known), known, tail=True)
    if len(text) > LAST_LINES_LIMIT:
        text = "..." + text[-(LAST_LINES_LIMIT - 3) :]
    return clip(text, LAST_LINES_LIMIT, secrets=secrets)


def redact_windows(text: str, secrets: Iterable[str], *, width: int = WINDOW) -> str:
    """`text` with every occurrence of any `width` characters in a row of one of `secrets`
    replaced (a maximal run of such characters becomes one ``<redacted>``).

    Linear in the text and the secrets together: the secrets come from a Secret a tenant
    admin may fill (up to 1 MiB), so their windows are only looked up among the text's,
    never each searched for in the text."""
    here = {text[i : i + width] for i in range(len(text) - width + 1)}
    if not here:
        return text
    found = {
        window
        for secret in secrets
        if width <= len(secret) <= MAX_SECRET_LENGTH
        for window in (secret[i : i + width] for i in range(len(secret) - width + 1))
        if window in here
    }
    if not found:
        return text
    covered = [False] * len(text)
    for i in range(len(text) - width + 1):
        if text[i : i + width] in found:
            covered[i : i + width] = [True] * width
    out: list[str] = []
    for i, char in enumerate(text):
        if not covered[i]:
            out.append(char)
        elif i == 0 or not covered[i - 1]:
            out.append(REDACTED)
    return "".join(out)


def secret_values(*secrets: KubeObject | None) -> list[str]:
    """The values of `secrets` (Kubernetes Secrets) that are secret: every value but those
    of `PUBLIC_KEYS`, and of a URL its password (decoded and as written) rather than the
    whole URL (whose host and scheme are words of any log)."""
    found: list[str] = []
    for secret in secrets:
        for key in sorted(((secret or {}).get("data") or {}).keys()):
            value = secret_value(secret, str(key)) if key not in PUBLIC_KEYS else None
            if not value:
                continue
            try:
                split = urllib.parse.urlsplit(value) if "://" in value else None
                password = split.password if split is not None else None
            except ValueError:
                password = None
            if split is not None and split.scheme and split.netloc:
                found += [p for p in (password, urllib.parse.unquote(password or "")) if p]
            else:
                found.append(value)
    return list(dict.fromkeys(found))


class PodReport:
    """What the Job's own pods say: exit code and termination message of the newest."""

    def __init__(self, *, exit_code: int | None, message: str, image_id: str = "") -> None:
        self.exit_code = exit_code
        self.message = message
        self.image_id = image_id
        """The kubelet's ``imageID`` of the container (the digest it ran), or empty."""


def pod_report(
    pods: Sequence[Mapping[str, Any]], job: Mapping[str, Any], *, labels: Mapping[str, str]
) -> PodReport | None:
    """The newest ended migration container (`MIGRATION_CONTAINER`, no other container of
    the pod) among `pods` that `job` controls (by uid) and that wear `labels` (the Job's
    selector, which only the operator and the controllers may put on a pod); None when
    there is none."""
    for ended in ended_containers(job, pods, container=MIGRATION_CONTAINER, labels=labels):
        code = ended.terminated.get("exitCode")
        return PodReport(
            exit_code=int(code) if isinstance(code, int) else None,
            message=str(ended.terminated.get("message") or ""),
            image_id=ended.image_id,
        )
    return None


def reported_image_id(
    pods: Sequence[Mapping[str, Any]], job: Mapping[str, Any], *, labels: Mapping[str, str]
) -> str:
    """The ``imageID`` the kubelet reports for the migration container (`MIGRATION_CONTAINER`)
    of the newest pod `job` controls (by uid) and that wears `labels`, running or ended
    (the kubelet sets it when the container starts); empty when none reports one. Read
    while the Job runs: its pod may be deleted before the Job's end is seen."""
    own = [
        pod
        for pod in pods
        if controlled_by(pod, job)
        and all(
            ((pod.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items()
        )
    ]
    own.sort(key=lambda p: str((p.get("status") or {}).get("startTime") or ""), reverse=True)
    for pod in own:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == MIGRATION_CONTAINER and status.get("imageID"):
                return str(status["imageID"])
    return ""
