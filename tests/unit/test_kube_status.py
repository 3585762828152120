"""The status writer: its diff, its request, and what it does on a conflict."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

import pytest

from cleo_operator.api.objects import KubeObject
from cleo_operator.kube.client import KubeClient, KubeError
from cleo_operator.kube.kinds import TENANT, Kind
from cleo_operator.kube.status import (
    StatusChanged,
    merge_patch,
    status_body,
    unless_changed,
    update_status,
    write_status,
)

OWNED = frozenset({"phase", "conditions", "database"})


def _obj(status: Mapping[str, Any], version: str = "7") -> KubeObject:
    return {
        "apiVersion": "cleoai.io/v1alpha1",
        "kind": "CleoTenant",
        "metadata": {"name": "acme", "resourceVersion": version},
        "status": dict(status),
    }


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


class _Server:
    """One object behind get and a preconditioned status merge patch; counts writes."""

    def __init__(self, obj: KubeObject) -> None:
        self.obj = obj
        self.writes = 0
        self.reads = 0
        self.before_write: list[KubeObject] = []

    def get(self, kind: Kind, name: str, *, namespace: str | None = None) -> KubeObject | None:
        self.reads += 1
        return copy.deepcopy(self.obj)

    def patch_merge(
        self, kind: Kind, name: str, patch: Mapping[str, Any], **where: str | None
    ) -> KubeObject:
        assert where.get("subresource") == "status"
        if self.before_write:  # another writer gets in first
            self.obj = self.before_write.pop(0)
        if patch["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise KubeError(status=409, reason="Conflict", message="stale", what="patch")
        self.writes += 1
        self.obj = _merge(self.obj, {"status": patch["status"]})
        self.obj["metadata"]["resourceVersion"] = str(
            int(self.obj["metadata"]["resourceVersion"]) + 1
        )
        return copy.deepcopy(self.obj)


def _kube(server: _Server) -> KubeClient:
    return cast(KubeClient, server)


# -- the diff ---------------------------------------------------------------------------


def test_an_equal_status_needs_no_patch() -> None:
    status = {"phase": "Ready", "database": {"name": "acme", "ready": True}, "list": [1, 2]}
    assert merge_patch(status, copy.deepcopy(status)) == {}


def test_the_patch_sets_changes_and_removes_what_is_gone() -> None:
    current = {"phase": "Ready", "replicas": 2, "children": [1, 2]}
    desired = {"phase": "Failed", "children": [1]}
    assert merge_patch(current, desired) == {"phase": "Failed", "children": [1], "replicas": None}


def test_a_key_removed_from_a_nested_map_is_removed_on_the_server() -> None:
    current = {"database": {"name": "acme", "error": "down"}}
    patch = merge_patch(current, {"database": {"name": "acme"}})
    assert patch == {"database": {"error": None}}
    assert _merge(current, patch) == {"database": {"name": "acme"}}


def test_none_in_the_desired_status_means_absent() -> None:
    assert merge_patch({"phase": "Ready"}, {"phase": "Ready", "replicas": None}) == {}
    assert merge_patch({"replicas": 2}, {"replicas": None}) == {"replicas": None}


# -- the request ------------------------------------------------------------------------


def test_the_request_carries_the_version_read_and_only_owned_keys() -> None:
    obj = _obj({"phase": "Progressing", "kopf": {"progress": {}}, "history": [1]})
    body = status_body(obj, lambda _: {"phase": "Ready"}, owned_keys=OWNED)
    assert body == {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Ready"}}


def test_an_owned_key_left_out_is_removed_and_foreign_keys_are_never_touched() -> None:
    obj = _obj({"phase": "Ready", "database": {"name": "acme"}, "kopf": {"dummy": 1}})
    body = status_body(obj, lambda _: {"phase": "Ready"}, owned_keys=OWNED)
    assert body is not None
    assert body["status"] == {"database": None}


def test_a_no_op_mutation_makes_no_request() -> None:
    obj = _obj({"phase": "Ready", "kopf": {"dummy": 1}})
    assert status_body(obj, lambda _: {"phase": "Ready"}, owned_keys=OWNED) is None
    assert status_body(obj, lambda _: None, owned_keys=OWNED) is None


def test_a_mutation_may_not_write_keys_it_does_not_own() -> None:
    with pytest.raises(ValueError, match="kopf"):
        status_body(_obj({}), lambda _: {"kopf": {}}, owned_keys=OWNED)


def test_the_mutation_gets_a_copy() -> None:
    obj = _obj({"phase": "Ready", "conditions": [{"type": "Ready"}]})

    def meddle(current: KubeObject) -> dict[str, Any]:
        current["status"]["conditions"].append({"type": "Other"})
        return {"phase": "Ready", "conditions": current["status"]["conditions"]}

    status_body(obj, meddle, owned_keys=OWNED)
    assert obj["status"]["conditions"] == [{"type": "Ready"}]


# -- the writer -------------------------------------------------------------------------


def _append_condition(current: KubeObject) -> dict[str, Any]:
    """A mutation that depends on what it reads: it adds to a list."""
    conditions = list((current.get("status") or {}).get("conditions") or [])
    return {"phase": "Ready", "conditions": [*conditions, {"type": "Mine"}]}


def test_a_stale_read_is_read_again_and_the_mutation_applied_to_the_fresh_object() -> None:
    stale = _obj({"phase": "Progressing", "conditions": [{"type": "Old"}]}, version="7")
    concurrent = _obj(
        {"phase": "Progressing", "conditions": [{"type": "Old"}, {"type": "Theirs"}], "kopf": 1},
        version="8",
    )
    server = _Server(stale)
    server.before_write.append(concurrent)
    written = update_status(
        _kube(server), TENANT, "acme", _append_condition, owned_keys=OWNED, read=stale
    )
    assert written is not None
    assert server.writes == 1
    assert server.reads == 1
    assert server.obj["status"] == {
        "phase": "Ready",
        "conditions": [{"type": "Old"}, {"type": "Theirs"}, {"type": "Mine"}],
        "kopf": 1,
    }


def test_a_conflict_every_time_is_raised_after_the_attempts() -> None:
    server = _Server(_obj({"phase": "Progressing"}, version="1"))
    server.before_write.extend(_obj({"phase": "Progressing"}, version=str(v)) for v in range(2, 9))
    with pytest.raises(KubeError) as raised:
        update_status(
            _kube(server), TENANT, "acme", _append_condition, owned_keys=OWNED, attempts=3
        )
    assert raised.value.conflict
    assert raised.value.transient
    assert server.writes == 0
    assert server.reads == 3


def test_no_op_writes_nothing() -> None:
    obj = _obj({"phase": "Ready", "kopf": {"x": 1}})
    server = _Server(obj)
    assert write_status(_kube(server), TENANT, obj, {"phase": "Ready"}, owned_keys=OWNED) is None
    assert server.writes == 0
    assert server.reads == 0


def test_a_missing_object_is_a_not_found_error() -> None:
    class Gone(_Server):
        def get(self, kind: Kind, name: str, *, namespace: str | None = None) -> None:
            return None

    with pytest.raises(KubeError) as raised:
        update_status(_kube(Gone(_obj({}))), TENANT, "acme", _append_condition, owned_keys=OWNED)
    assert raised.value.not_found


def test_a_decision_on_changed_own_keys_is_refused_with_a_conflict() -> None:
    read = _obj({"phase": "Running", "conditions": []}, version="3")
    server = _Server(read)
    server.before_write.append(_obj({"phase": "Succeeded", "conditions": []}, version="4"))
    mutate = unless_changed(read, {"phase": "Failed", "conditions": []}, owned_keys=OWNED)
    with pytest.raises(StatusChanged) as raised:
        update_status(_kube(server), TENANT, "acme", mutate, owned_keys=OWNED, read=read)
    assert raised.value.conflict
    assert server.obj["status"]["phase"] == "Succeeded"


def test_a_decision_survives_a_change_of_someone_else_s_keys() -> None:
    read = _obj({"phase": "Running"}, version="3")
    server = _Server(read)
    server.before_write.append(_obj({"phase": "Running", "kopf": {"x": 1}}, version="4"))
    mutate = unless_changed(read, {"phase": "Succeeded"}, owned_keys=OWNED)
    update_status(_kube(server), TENANT, "acme", mutate, owned_keys=OWNED, read=read)
    assert server.obj["status"] == {"phase": "Succeeded", "kopf": {"x": 1}}
