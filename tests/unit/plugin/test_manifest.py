"""Editing spec.secrets in place: everything outside it stays byte for byte."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from cleo_operator.cli.common import CommandError
from cleo_operator.cli.plugin.manifest import (
    find_tenant,
    read_secret_manifest,
    replace_secrets,
    write_in_place,
)

WITHOUT_SECRETS = """\
# The acme tenant, reviewed by the platform team.
apiVersion: cleoai.io/v1alpha1
kind: CleoTenant
metadata:
  name: acme   # the customer's short name
spec:
  # who administers it
  admins:
    - kind: User
      name: "alice@example.com"
  workload:
    image: 'ghcr.io/cleoai/cleo:1.2'  # pinned
---
# another document, left alone
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
"""

WITH_SECRETS = """\
apiVersion: cleoai.io/v1alpha1
kind: CleoTenant
metadata:
  name: acme
spec:
  secrets:   # sealed with kubectl cleo seal
    - name: old
      data:
        A: cleo:v1:AAAA
  # the workload comes after the secrets
  workload:
    image: x  # keep me
"""

NEW = [{"name": "api-keys", "data": {"K": "cleo:v1:BBBB"}}]


def test_secrets_are_added_at_the_end_of_spec_and_nothing_else_moves() -> None:
    manifest = find_tenant(WITHOUT_SECRETS, where="t.yaml")
    assert (manifest.name, manifest.secrets) == ("acme", [])
    text = replace_secrets(manifest, NEW, where="t.yaml")
    head, _, tail = WITHOUT_SECRETS.partition("  # pinned\n")
    assert text.startswith(head + "  # pinned\n")
    assert text.endswith(tail)
    assert "  secrets:\n  - name: api-keys\n    data:\n      K: cleo:v1:BBBB\n" in text
    assert yaml.safe_load_all(text).__next__()["spec"]["secrets"] == NEW


def test_existing_secrets_are_replaced_and_comments_around_them_kept() -> None:
    manifest = find_tenant(WITH_SECRETS, where="t.yaml")
    assert manifest.secrets == [{"name": "old", "data": {"A": "cleo:v1:AAAA"}}]
    merged = [*manifest.secrets, *NEW]
    text = replace_secrets(manifest, merged, where="t.yaml")
    assert text.startswith("apiVersion: cleoai.io/v1alpha1\nkind: CleoTenant\n")
    assert (
        "  # the workload comes after the secrets\n  workload:\n    image: x  # keep me\n" in text
    )
    assert yaml.safe_load(text)["spec"]["secrets"] == merged
    # What is lost is said in the module: the comment on the secrets key's own line.
    assert "sealed with kubectl cleo seal" not in text


def test_an_empty_list_is_written_in_flow_style() -> None:
    manifest = find_tenant(WITH_SECRETS, where="t.yaml")
    text = replace_secrets(manifest, [], where="t.yaml")
    assert "  secrets: []\n" in text
    assert yaml.safe_load(text)["spec"]["secrets"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: ConfigMap\n", "exactly one CleoTenant document; it holds 0"),
        ("kind: CleoTenant\nmetadata: {name: a}\n---\nkind: CleoTenant\n", "it holds 2"),
        ("kind: CleoTenant\nmetadata: {}\nspec: {}\n", "has no metadata.name"),
        ("kind: CleoTenant\nmetadata: {name: a}\nspec:\n  secrets: x\n", "list of {name, data}"),
        ("kind: CleoTenant\nmetadata: {name: a}\nspec: [\n", "is not valid YAML"),
    ],
)
def test_files_that_are_not_one_cleo_tenant_are_refused(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("{", r"\{").replace("}", r"\}")):
        find_tenant(text, where="t.yaml")


def test_a_flow_style_spec_is_refused_rather_than_rewritten() -> None:
    manifest = find_tenant(
        "kind: CleoTenant\nmetadata: {name: a}\nspec: {paused: true}\n", where="t.yaml"
    )
    with pytest.raises(CommandError, match="block mapping"):
        replace_secrets(manifest, NEW, where="t.yaml")


def test_writing_in_place_keeps_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "tenant.yaml"
    target.write_text("old\n")
    target.chmod(0o640)
    write_in_place(target, "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["tenant.yaml"]


def test_a_secret_manifest_gives_data_and_string_data_and_errors_name_no_value() -> None:
    text = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "api-keys"},
            "data": {"A": base64.b64encode(b"\x00binary").decode(), "B": "b2xk"},
            "stringData": {"B": "new"},
        }
    )
    assert read_secret_manifest(text, where="s.yaml") == (
        "api-keys",
        {"A": b"\x00binary", "B": b"new"},
    )
    bad = "kind: Secret\nmetadata: {name: x}\ndata:\n  A: not*base64-hunter2\n"
    with pytest.raises(CommandError) as caught:
        read_secret_manifest(bad, where="s.yaml")
    assert str(caught.value) == "s.yaml: data.A is not base64"
