"""The database password's policy: when it rotates, and which stored passwords are replaced."""

from __future__ import annotations

import datetime

import pytest

from cleo_operator.reconcile.database_passwords import (
    MIN_PASSWORD_LENGTH,
    ROTATE_ANNOTATION,
    PasswordChoice,
    Rotation,
    StoredPassword,
    choose_password,
    new_password,
    password_fingerprint,
    recorded_after,
    rotation_due,
    rotation_request_pending,
    seconds_until_rotation,
    unusable_password,
)

NOW = datetime.datetime(2025, 1, 1, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def stored(
    *, rotated_at: datetime.datetime | None = NOW - HOUR, request: str | None = None
) -> StoredPassword:
    password = "p" * 43
    return StoredPassword(
        password=password,
        fingerprint=password_fingerprint(tenant="acme", password=password),
        rotated_at=rotated_at,
        rotation_request=request,
    )


# --------------------------------------------------------------------------- rotation


def test_no_usable_password_is_a_rotation_that_says_why() -> None:
    rotation = rotation_due(None, "the Secret was deleted", period=None, request="r1", now=NOW)
    assert rotation == Rotation(why="the Secret was deleted", at=NOW, request="r1")


def test_a_usable_password_without_a_period_or_request_is_kept() -> None:
    assert rotation_due(stored(), "", period=None, request=None, now=NOW) is None


def test_a_new_request_rotates_and_is_recorded_but_a_handled_one_does_not() -> None:
    rotation = rotation_due(stored(request="r1"), "", period=None, request="r2", now=NOW)
    assert rotation is not None
    assert rotation.request == "r2"
    assert ROTATE_ANNOTATION in rotation.why
    assert rotation_due(stored(request="r2"), "", period=None, request="r2", now=NOW) is None


@pytest.mark.parametrize(
    ("age", "due"),
    [(HOUR - datetime.timedelta(seconds=1), False), (HOUR, True), (2 * HOUR, True)],
)
def test_the_period_counts_from_when_the_password_was_made(
    age: datetime.timedelta, due: bool
) -> None:
    password = stored(rotated_at=NOW - age, request="r1")
    rotation = rotation_due(password, "", period="1h", request="r1", now=NOW)
    assert (rotation is not None) is due
    if rotation is not None:
        assert "older than passwordRotationPeriod 1h" in rotation.why
        assert rotation.request == "r1"  # a scheduled rotation keeps the handled request


def test_a_period_without_a_recorded_time_rotates() -> None:
    rotation = rotation_due(stored(rotated_at=None), "", period="1h", request=None, now=NOW)
    assert rotation is not None
    assert "does not say when" in rotation.why


def test_seconds_until_rotation() -> None:
    assert seconds_until_rotation(NOW - HOUR, "2h", NOW) == 3600.0
    assert seconds_until_rotation(NOW - 3 * HOUR, "2h", NOW) == 1.0  # overdue: soon, not now
    assert seconds_until_rotation(NOW, None, NOW) is None
    assert seconds_until_rotation(None, "2h", NOW) is None


def test_choose_password_keeps_or_makes_a_fresh_one() -> None:
    kept = choose_password(stored(), "", period=None, request=None, now=NOW)
    assert kept == PasswordChoice(password="p" * 43, rotation=None)
    fresh = choose_password(stored(), "", period=None, request="now", now=NOW)
    assert fresh.rotation is not None
    assert fresh.password != "p" * 43
    assert len(fresh.password) >= MIN_PASSWORD_LENGTH


def test_what_the_secret_records_after_a_rotation_or_a_kept_password() -> None:
    before = stored(request="r1")
    assert (
        recorded_after(
            PasswordChoice(password=before.password, rotation=None), before, tenant="acme"
        )
        is before
    )
    rotation = Rotation(why="asked", at=NOW, request="r2")
    after = recorded_after(
        PasswordChoice(password="q" * 43, rotation=rotation), before, tenant="acme"
    )
    assert after.rotated_at == NOW
    assert after.rotation_request == "r2"
    assert after.fingerprint == password_fingerprint(tenant="acme", password="q" * 43)
    with pytest.raises(ValueError, match="usable"):
        recorded_after(PasswordChoice(password="x", rotation=None), None, tenant="acme")


# --------------------------------------------------------------------------- stored passwords


def test_an_operator_made_password_is_usable() -> None:
    password = new_password()
    recorded = password_fingerprint(tenant="acme", password=password)
    assert (
        unusable_password(tenant="acme", password=password, recorded_fingerprint=recorded) is None
    )


@pytest.mark.parametrize(
    ("password", "recorded_for", "why"),
    [
        ("h" * 43, "another password", "changed by hand"),
        ("short", "short", "not one the operator made"),
        ("n" * 40 + "\x00" + "n" * 2, "n" * 40 + "\x00" + "n" * 2, "not one the operator made"),
    ],
)
def test_a_stored_password_the_operator_did_not_make_is_unusable(
    password: str, recorded_for: str, why: str
) -> None:
    recorded = password_fingerprint(tenant="acme", password=recorded_for)
    reason = unusable_password(tenant="acme", password=password, recorded_fingerprint=recorded)
    assert reason is not None
    assert why in reason
    assert password not in reason


def test_fingerprints_reveal_nothing_and_differ_across_tenants() -> None:
    password = new_password()
    mine = password_fingerprint(tenant="acme", password=password)
    assert mine == password_fingerprint(tenant="acme", password=password)
    assert mine != password_fingerprint(tenant="other", password=password)
    assert mine != password_fingerprint(tenant="acme", password=new_password())
    assert password not in mine
    assert len(mine) == 32


def test_new_passwords_are_url_safe_and_distinct() -> None:
    made = {new_password() for _ in range(20)}
    assert len(made) == 20
    assert all(len(p) == 43 and p.replace("-", "").replace("_", "").isalnum() for p in made)


@pytest.mark.parametrize(
    ("annotation", "handled", "pending"),
    [
        (None, None, False),
        ("  ", None, False),
        ("r1", None, True),
        ("r1", "r1", False),
        ("r2", "r1", True),
    ],
)
def test_a_rotation_request_is_pending_until_status_says_it_was_handled(
    annotation: str | None, handled: str | None, pending: bool
) -> None:
    annotations = {ROTATE_ANNOTATION: annotation} if annotation is not None else {}
    status = {"passwordRotationRequest": handled} if handled is not None else None
    assert rotation_request_pending(annotations, status) is pending
