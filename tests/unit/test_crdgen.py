"""The generated CRDs: structural, complete, with their CEL rules, and committed as generated."""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Iterator
from typing import Annotated, Any

import pydantic
import pytest
import yaml

from cleo_operator.api.base import SpecModel
from cleo_operator.api.crdgen import (
    CHART_CRD_DIR,
    CRD_DIR,
    HEADER,
    TEMPLATE_HEADER,
    CrdGenerationError,
    generate_crds,
    render_chart_templates,
    render_crd_files,
    render_crd_stream,
    structural_schema,
    write_crds,
)
from cleo_operator.api.kinds import RESOURCES

REPO = pathlib.Path(__file__).resolve().parents[2]

CRDS = {crd["spec"]["names"]["kind"]: crd for crd in generate_crds()}
CRDS_BY_NAME = {crd["metadata"]["name"]: crd for crd in generate_crds()}

ALLOWED_KEYS = {
    "description",
    "type",
    "format",
    "enum",
    "default",
    "nullable",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "anyOf",
    "items",
    "additionalProperties",
    "properties",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
}

# The only places where the API server keeps whatever it is given, and why.
PRESERVE_UNKNOWN = {
    "status.kopf",  # Kopf's own bookkeeping
}


def root_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its field path (``[]`` for list items, ``[*]`` for map values)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}[*]")


def all_nodes() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for kind in CRDS:
        for path, node in walk(root_schema(kind), ""):
            yield kind, path, node


NODES = list(all_nodes())


def node_id(kind: str, path: str) -> str:
    return f"{kind}:{path or '<root>'}"


def test_there_is_one_crd_per_kind_in_a_stable_order() -> None:
    assert list(CRDS) == ["CleoTenant", "CleoBackup", "CleoFailover"]
    assert generate_crds() == generate_crds()
    assert render_crd_files() == render_crd_files()


@pytest.mark.parametrize(("kind", "path", "node"), NODES, ids=[node_id(k, p) for k, p, _ in NODES])
def test_every_node_is_structural(kind: str, path: str, node: dict[str, Any]) -> None:
    unknown = set(node) - ALLOWED_KEYS
    assert not unknown, f"{kind} {path}: keys a structural schema cannot have: {unknown}"
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    assert "type" in node or int_or_string or preserve, f"{kind} {path}: no type"
    assert node.get("type") != "null"
    if "anyOf" in node:
        # The one union a structural schema allows, with nothing else under anyOf.
        assert int_or_string, f"{kind} {path}: anyOf without int-or-string"
        assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node:
            assert node[bound] is True
            assert ("minimum" if bound == "exclusiveMinimum" else "maximum") in node
    if "additionalProperties" in node:
        assert isinstance(node["additionalProperties"], dict)
        assert "properties" not in node
    if preserve:
        assert path in PRESERVE_UNKNOWN, f"{kind} {path}: keeps unknown fields; say why"


def test_nothing_pydantic_specific_is_left_anywhere() -> None:
    text = "\n".join(render_crd_files().values())
    for leftover in ("$ref", "$defs", "title:", "const:", "allOf", "oneOf", "not:", "x-cleo"):
        assert leftover not in text, leftover


@pytest.mark.parametrize(("kind", "path", "node"), NODES, ids=[node_id(k, p) for k, p, _ in NODES])
def test_every_field_is_described_and_bounded(kind: str, path: str, node: dict[str, Any]) -> None:
    if path in ("", "apiVersion", "kind", "metadata"):
        return  # the API server's own fields (it also checks them)
    if not path.endswith(("[]", "[*]")):  # items and map values are described by their field
        assert node.get("description"), f"{kind} {path}: no description for kubectl explain"
    type_ = node.get("type")
    if type_ == "string" and "enum" not in node:
        assert "maxLength" in node, f"{kind} {path}: string without maxLength (CEL cost)"
    if type_ == "array":
        assert "maxItems" in node, f"{kind} {path}: list without maxItems (CEL cost)"
    if type_ == "object" and "additionalProperties" in node:
        assert "maxProperties" in node, f"{kind} {path}: map without maxProperties"


@pytest.mark.parametrize(("kind", "path", "node"), NODES, ids=[node_id(k, p) for k, p, _ in NODES])
def test_defaults_are_persisted_only_for_spec_scalars(
    kind: str, path: str, node: dict[str, Any]
) -> None:
    if "default" not in node:
        return
    assert path.startswith("spec."), f"{kind} {path}: status is only written by the operator"
    assert node.get("type") in ("string", "integer", "boolean", "number")
    assert node["default"] is not None


def test_chosen_defaults_are_persisted() -> None:
    spec = root_schema("CleoTenant")["properties"]["spec"]["properties"]
    assert spec["deletionPolicy"]["default"] == "Retain"
    assert spec["paused"]["default"] is False
    assert spec["database"]["properties"]["connectionLimit"]["default"] == 20
    assert spec["failover"]["properties"]["failoverDelay"]["default"] == "60s"
    # Whole sub-objects are not defaulted: a tenant that never mentions them stays short.
    assert "default" not in spec["autoscaling"]
    backup_spec = root_schema("CleoBackup")["properties"]["spec"]["properties"]
    assert backup_spec["concurrencyPolicy"]["default"] == "Forbid"
    assert backup_spec["historyLimit"]["default"] == 10


@pytest.mark.parametrize(("kind", "path", "node"), NODES, ids=[node_id(k, p) for k, p, _ in NODES])
def test_list_map_keys_are_required_fields_of_the_items(
    kind: str, path: str, node: dict[str, Any]
) -> None:
    if node.get("x-kubernetes-list-type") != "map":
        return
    items = node["items"]
    for key in node["x-kubernetes-list-map-keys"]:
        assert key in items["properties"]
        assert key in items.get("required", []), f"{kind} {path}: map key {key} not required"


def test_lists_merged_by_key_under_server_side_apply() -> None:
    expected = {
        ("CleoTenant", "status.conditions"): ["type"],
        ("CleoTenant", "spec.workload.env"): ["name"],
        ("CleoTenant", "spec.secrets"): ["name"],
        ("CleoTenant", "spec.admins"): ["kind", "name"],
        ("CleoTenant", "spec.viewers"): ["kind", "name"],
        ("CleoTenant", "status.secrets"): ["name"],
        ("CleoBackup", "status.conditions"): ["type"],
        ("CleoFailover", "status.conditions"): ["type"],
        ("CleoFailover", "status.steps"): ["name"],
    }
    found = {
        (kind, path): node["x-kubernetes-list-map-keys"]
        for kind, path, node in NODES
        if node.get("x-kubernetes-list-type") == "map"
    }
    assert found == expected


def resolve_field_path(node: dict[str, Any], field_path: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = node
    for part in field_path.lstrip(".").split("."):
        found = (found or {}).get("properties", {}).get(part)
    return found


@pytest.mark.parametrize(("kind", "path", "node"), NODES, ids=[node_id(k, p) for k, p, _ in NODES])
def test_cel_rules_have_messages_naming_the_field_and_valid_field_paths(
    kind: str, path: str, node: dict[str, Any]
) -> None:
    for rule in node.get("x-kubernetes-validations", []):
        assert set(rule) <= {"rule", "message", "fieldPath", "reason"}
        assert rule["rule"]
        named = rule["message"].split(" ")[0].rstrip(":")
        assert named == "spec" or named.startswith(("spec.", "metadata.name")), rule
        if "fieldPath" in rule:
            # The API server refuses a CRD whose fieldPath names no declared property.
            assert resolve_field_path(node, rule["fieldPath"]) is not None, rule


def rules_at(kind: str, path: str) -> list[str]:
    node = dict(walk(root_schema(kind), ""))[path]
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    ("kind", "path", "rule"),
    [
        ("CleoTenant", "", "self.metadata.name.size() <= 40"),
        ("CleoTenant", "", "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"),
        ("CleoTenant", "spec.namespace", "self == oldSelf"),
        ("CleoTenant", "spec", "has(oldSelf.namespace) == has(self.namespace)"),
        (
            "CleoTenant",
            "spec.autoscaling",
            "!has(self.minReplicas) || !has(self.maxReplicas) "
            "|| self.minReplicas <= self.maxReplicas",
        ),
        ("CleoTenant", "spec.encryption.rotationPeriod", "self.matches('[1-9]')"),
        ("CleoTenant", "spec.database.passwordRotationPeriod", "self.matches('[1-9]')"),
        ("CleoTenant", "spec.failover", "!self.automatic || has(self.standbySite)"),
        ("CleoTenant", "spec.secrets[].name", "!self.startsWith('cleo-')"),
        ("CleoBackup", "", "self.metadata.name.size() <= 40"),
        ("CleoBackup", "spec.tenant", "self == oldSelf"),
        ("CleoBackup", "spec.destination", "has(self.pvc) == (self.type == 'pvc')"),
        ("CleoBackup", "spec.destination", "has(self.s3) == (self.type == 's3')"),
        ("CleoBackup", "spec", "!has(self.timeZone) || has(self.schedule)"),
        ("CleoFailover", "spec", "self == oldSelf"),
        ("CleoFailover", "", "self.metadata.name.size() <= 63"),
    ],
)
def test_cel_rules_are_where_the_api_needs_them(kind: str, path: str, rule: str) -> None:
    assert rule in rules_at(kind, path)


def test_the_max_replicas_rule_blames_max_replicas() -> None:
    node = dict(walk(root_schema("CleoTenant"), ""))["spec.autoscaling"]
    (rule,) = node["x-kubernetes-validations"]
    assert rule["fieldPath"] == ".maxReplicas"
    assert rule["message"] == (
        "spec.autoscaling.maxReplicas must be greater than or equal to spec.autoscaling.minReplicas"
    )


def test_the_namespace_refuses_null_where_other_optionals_allow_it() -> None:
    spec = root_schema("CleoTenant")["properties"]["spec"]["properties"]
    assert "nullable" not in spec["namespace"]
    assert spec["workload"]["nullable"] is True


@pytest.mark.parametrize("resource", RESOURCES, ids=[r.kind for r in RESOURCES])
def test_names_scope_subresources_and_columns(resource: Any) -> None:
    crd = CRDS[resource.kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{resource.plural}.cleoai.io"
    names = crd["spec"]["names"]
    assert names["categories"] == ["cleo"]
    assert names["shortNames"] == list(resource.short_names)
    assert names["listKind"] == f"{resource.kind}List"
    assert crd["spec"]["scope"] == resource.scope
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]
    status = schema["properties"]["status"]["properties"]
    assert status["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    for field in ("observedGeneration", "phase", "conditions"):
        assert field in status


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        (
            "CleoTenant",
            [
                ("Phase", ".status.phase"),
                ("Ready", '.status.conditions[?(@.type=="Ready")].status'),
                ("Namespace", ".status.namespace"),
                ("Replicas", ".status.replicas.ready"),
                ("Age", ".metadata.creationTimestamp"),
            ],
        ),
        (
            "CleoBackup",
            [
                ("Schedule", ".spec.schedule"),
                ("Last Backup", ".status.lastBackup.time"),
                ("Last Verified", ".status.lastVerifiedBackup.time"),
                ("Phase", ".status.phase"),
                ("Age", ".metadata.creationTimestamp"),
            ],
        ),
        (
            "CleoFailover",
            [
                ("Type", ".spec.type"),
                ("Tenant", ".spec.tenant"),
                ("Phase", ".status.phase"),
                ("RTO", ".status.measuredRTOSeconds"),
                ("Age", ".metadata.creationTimestamp"),
            ],
        ),
    ],
)
def test_printer_columns_point_at_declared_fields(
    kind: str, columns: list[tuple[str, str]]
) -> None:
    printed = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"]) for c in printed] == columns
    schema = root_schema(kind)
    for column in printed:
        path = column["jsonPath"].split("[")[0].lstrip(".")
        if path.startswith("metadata"):
            assert column["type"] == "date"
            continue
        assert resolve_field_path(schema, path) is not None, column


def test_committed_crds_are_what_the_models_generate() -> None:
    for folder, files, header in (
        (REPO / CRD_DIR, render_crd_files(), HEADER),
        (REPO / CHART_CRD_DIR, render_chart_templates(), TEMPLATE_HEADER),
    ):
        for name, text in files.items():
            path = folder / name
            assert path.is_file(), f"{path.relative_to(REPO)} is missing: run `cleo-operator crds`"
            assert path.read_bytes() == text.encode("utf-8"), (
                f"{path.relative_to(REPO)} differs from the models: run `cleo-operator crds` "
                "and commit the result"
            )
        generated = {p.name for p in folder.glob("*.yaml") if p.read_text().startswith(header)}
        assert generated == set(files), f"stale generated CRDs in {folder.relative_to(REPO)}"


def test_the_chart_has_no_crds_folder_that_helm_would_install_twice() -> None:
    # Helm installs a chart's crds/ once and never upgrades it; the templates do both.
    assert not (REPO / "charts" / "cleo-operator" / "crds").exists()


def test_committed_files_parse_back_to_the_crds() -> None:
    for name, text in render_crd_files().items():
        assert text.startswith(HEADER)
        crd = yaml.safe_load(text)
        assert f"{crd['metadata']['name']}.yaml" == name
        assert crd == CRDS[crd["spec"]["names"]["kind"]]


def test_chart_templates_template_only_the_metadata() -> None:
    for name, text in render_chart_templates().items():
        assert text.startswith(TEMPLATE_HEADER)
        lines = text.splitlines()
        assert lines[4] == "{{- if .Values.crds.install }}"
        assert lines[-1] == "{{- end }}"
        spec_at = lines.index("spec:")
        # Below metadata no template action: the spec is the models' YAML, verbatim.
        assert not any("{{" in line for line in lines[spec_at:-1])
        crd = CRDS_BY_NAME[name.removesuffix(".yaml")]
        assert yaml.safe_load("\n".join(lines[spec_at:-1])) == {"spec": crd["spec"]}
        metadata = "\n".join(lines[5:spec_at])
        assert f"  name: {crd['metadata']['name']}" in metadata
        assert "{{- if .Values.crds.keep }}" in metadata
        assert "helm.sh/resource-policy: keep" in metadata


def test_a_template_delimiter_in_a_models_text_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crd = generate_crds()[0]
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "say {{ hi }}"
    monkeypatch.setattr("cleo_operator.api.crdgen.generate_crds", lambda: [crd])
    with pytest.raises(CrdGenerationError, match="template"):
        render_chart_templates()


def test_the_stream_is_every_crd_once_in_order() -> None:
    stream = render_crd_stream()
    assert stream.startswith("---\napiVersion: apiextensions.k8s.io/v1\n")
    assert list(yaml.safe_load_all(stream)) == generate_crds()


def test_crds_stdout_prints_the_stream_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    from cleo_operator.cli.crds import cmd_crds  # noqa: PLC0415

    assert cmd_crds(argparse.Namespace(stdout=True, root=tmp_path)) == 0
    out = capsys.readouterr().out
    assert out == render_crd_stream()
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == list(CRDS_BY_NAME)
    assert list(tmp_path.iterdir()) == []


def test_crds_stdout_and_root_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    from cleo_operator.cli.root import build_parser  # noqa: PLC0415

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["crds", "--stdout", "--root", "x"])
    assert exited.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_write_crds_writes_both_folders_and_removes_only_its_own_stale_files(
    tmp_path: pathlib.Path,
) -> None:
    stale = tmp_path / CRD_DIR / "cleoretired.cleoai.io.yaml"
    stale_template = tmp_path / CHART_CRD_DIR / "cleoretired.cleoai.io.yaml"
    foreign = tmp_path / CHART_CRD_DIR / "someone-elses.yaml"
    stale.parent.mkdir(parents=True)
    foreign.parent.mkdir(parents=True)
    stale.write_text(HEADER + "kind: CustomResourceDefinition\n")
    stale_template.write_text(TEMPLATE_HEADER + "kind: CustomResourceDefinition\n")
    foreign.write_text("kind: CustomResourceDefinition\n")

    written = write_crds(tmp_path)

    names = sorted(render_crd_files())
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(
        [f"{CRD_DIR}/{n}" for n in names] + [f"{CHART_CRD_DIR}/{n}" for n in names]
    )
    assert not stale.exists()
    assert not stale_template.exists()
    assert foreign.exists()
    for path in written:
        in_chart = path.parent == tmp_path / CHART_CRD_DIR
        expected = render_chart_templates() if in_chart else render_crd_files()
        assert path.read_text(encoding="utf-8") == expected[path.name]


# --- the generator refuses what it cannot express -------------------------------------------


class AnyMap(SpecModel):
    settings: dict[str, Any] = pydantic.Field(default_factory=dict)


class Union(SpecModel):
    value: int | str = 0


class KeyPattern(SpecModel):
    labels: dict[Annotated[str, pydantic.StringConstraints(pattern="^[a-z]+$")], str] = (
        pydantic.Field(default_factory=dict)
    )


class Bounded(SpecModel):
    ratio: float = pydantic.Field(default=0.5, gt=0, lt=1)
    note: str | None = None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (AnyMap, "use schema.RawObject"),
        (Union, "a union other than X | None"),
        (KeyPattern, "spec.labels: keyword '[a-zA-Z]+' has no structural equivalent"),
    ],
)
def test_the_generator_refuses_what_has_no_structural_form(
    model: type[SpecModel], message: str
) -> None:
    with pytest.raises(CrdGenerationError, match=message):
        structural_schema(model.model_json_schema(by_alias=True), path="spec", keep_defaults=True)


def test_the_generator_refuses_a_bound_on_the_wrong_type() -> None:
    # What pydantic emits when a length constraint lands on a map wrapped by a validator.
    schema = {
        "type": "object",
        "properties": {
            "labels": {"type": "object", "maxLength": 3, "additionalProperties": {"type": "string"}}
        },
    }
    with pytest.raises(
        CrdGenerationError, match=r"spec\.labels: maxLength on a node of type object"
    ):
        structural_schema(schema, path="spec", keep_defaults=True)


def test_exclusive_bounds_and_optionals_are_rewritten() -> None:
    schema = structural_schema(
        Bounded.model_json_schema(by_alias=True), path="spec", keep_defaults=True
    )
    ratio = schema["properties"]["ratio"]
    assert ratio == {
        "type": "number",
        "default": 0.5,
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
    }
    assert schema["properties"]["note"] == {"type": "string", "nullable": True}
