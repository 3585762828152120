"""The tenant keyring reaches CleoAI read-only, and only when there is one."""

from __future__ import annotations

from typing import Any

from cleo_operator.api.tenant import parse_tenant_spec
from cleo_operator.render.tenant import render_tenant
from cleo_operator.render.workload import KEYRING_MOUNT_PATH

SPEC = parse_tenant_spec({"workload": {"image": "registry.example.com/cleoai:1"}})


def deployment(**kwargs: Any) -> dict[str, Any]:
    objects = render_tenant(name="acme", uid="u", spec=SPEC, config_checksum="c", **kwargs)
    return next(o for o in objects if o["kind"] == "Deployment")


def test_keyring_is_mounted_read_only_and_named_in_the_environment() -> None:
    pod = deployment(keyring_secret="cleo-keyring")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == KEYRING_MOUNT_PATH)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "cleo-keyring"
    assert volume["secret"]["defaultMode"] == 0o440  # not world-readable
    assert {"name": "CLEO_KEYRING_DIR", "value": KEYRING_MOUNT_PATH} in container["env"]
    assert {"secretRef": {"name": "cleo-keyring"}} not in container.get("envFrom", [])


def test_no_keyring_no_mount() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert all("secret" not in v for v in pod["volumes"])
    assert "env" not in container
