"""What makes a tenant keyring Secret differ from the KEK-wrapped copy, in words without keys."""

from __future__ import annotations

import datetime

from cleo_operator.crypto import Keyring
from cleo_operator.crypto.keyring import DataKey
from cleo_operator.reconcile.keys import (
    QUARANTINE_PREFIX,
    keyring_differences,
    quarantine_name,
    quarantine_selector,
)

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
COPY = Keyring.generate(T0).rotate(T0 + datetime.timedelta(hours=1))


def _with(*keys: DataKey, active: int) -> dict[str, bytes]:
    return Keyring(keys=keys, active_version=active).to_secret_data()


def test_the_same_keyring_is_no_difference() -> None:
    assert not keyring_differences(COPY, COPY.to_secret_data())


def test_an_added_version_is_new_material() -> None:
    extra = DataKey(version=3, created=T0, material=b"\x01" * 32)
    found = keyring_differences(COPY, _with(*COPY.keys, extra, active=3))
    assert found.novel
    assert found.found == (
        "it holds version(s) v3 that the copy does not",
        "it names v3 active where the copy names v2",
    )


def test_a_replaced_key_is_new_material_and_never_quoted() -> None:
    v1, v2 = COPY.keys
    forged = DataKey(version=2, created=v2.created, material=b"\x02" * 32)
    found = keyring_differences(COPY, _with(v1, forged, active=2))
    assert found.novel
    assert found.describe() == "it holds a different key for v2"
    for key in (*COPY.keys, forged):
        assert key.material.hex() not in found.describe()


def test_a_subset_of_the_copy_holds_nothing_new() -> None:
    v1, _ = COPY.keys
    found = keyring_differences(COPY, _with(v1, active=1))
    assert not found.novel
    assert found.found == (
        "it lacks version(s) v2",
        "it names v1 active where the copy names v2",
    )


def test_extra_entries_and_garbage_are_new_material() -> None:
    extra = keyring_differences(COPY, {**COPY.to_secret_data(), "notes.txt": b"x"})
    assert extra.novel
    assert extra.found == ("extra data entries notes.txt",)
    garbage = keyring_differences(COPY, {"keyring.json": b"{"})
    assert garbage.novel
    assert garbage.describe().startswith("it cannot be read as a keyring (")


def test_quarantine_names_never_collide_with_a_keyring_copy() -> None:
    name = quarantine_name("acme", "12345")
    assert name == "cleo-quarantine-keyring-acme-12345"
    assert name.startswith(QUARANTINE_PREFIX)
    assert not name.startswith("cleo-keyring-")
    assert quarantine_name("acme", "Weird/Version") == "cleo-quarantine-keyring-acme-weird-version"
    assert "cleoai.io/tenant=acme" in quarantine_selector("acme")
    assert "component=keyring-quarantine" in quarantine_selector("acme")
