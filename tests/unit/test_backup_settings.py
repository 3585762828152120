"""The operator's backup settings from its environment: defaults, values, and errors that
name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cleo_operator import __version__
from cleo_operator.reconcile.backup_settings import BackupSettings, default_image


def test_defaults_run_the_operators_own_image_and_verify_no_volumes() -> None:
    settings = BackupSettings.from_environment({})
    assert settings.pod.image == default_image() == f"ghcr.io/cleoai/cleo-operator:{__version__}"
    assert settings.pod.image_pull_policy is None
    # No 0.0.0.0/0 default any more (issue 11): the operator finds the API server at start.
    assert settings.pod.api_server_cidrs == ()
    assert settings.pod.object_store_cidrs == ()
    assert settings.pod.image_pull_secrets == ()
    assert settings.pull_secret_sources == ()
    assert settings.pod.resources is None
    assert settings.volumes_dir is None
    assert settings.one_off_ttl_seconds == 86400.0


def test_the_environment_sets_image_policy_egress_and_volumes() -> None:
    settings = BackupSettings.from_environment(
        {
            "CLEO_OPERATOR_IMAGE": "registry.example/cleo-operator@sha256:" + "a" * 64,
            "CLEO_OPERATOR_IMAGE_PULL_POLICY": "IfNotPresent",
            "CLEO_BACKUP_API_SERVER_CIDRS": " 10.96.0.1/32, fd00:10:96::/64 ,",
            "CLEO_BACKUP_VOLUMES_DIR": "/var/lib/cleo/volumes",
            "CLEO_BACKUP_ONE_OFF_TTL_SECONDS": "3600",
        }
    )
    assert settings.one_off_ttl_seconds == 3600.0
    assert settings.pod.image.endswith("a" * 64)
    assert settings.pod.image_pull_policy == "IfNotPresent"
    assert settings.pod.api_server_cidrs == ("10.96.0.1/32", "fd00:10:96::/64")
    assert settings.volumes_dir == Path("/var/lib/cleo/volumes")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("CLEO_OPERATOR_IMAGE_PULL_POLICY", "Sometimes", "use one of Always, IfNotPresent, Never"),
        ("CLEO_BACKUP_API_SERVER_CIDRS", "10.0.0.0/8,the-internet", "'the-internet' is not"),
        ("CLEO_BACKUP_API_SERVER_CIDRS", "0.0.0.0/0", "is every address"),
        ("CLEO_BACKUP_OBJECT_STORE_CIDRS", "0.0.0.0/1,128.0.0.0/1", "is too wide"),
        ("CLEO_BACKUP_OBJECT_STORE_CIDRS", "2000::/3", "at least /24 for IPv6"),
        ("CLEO_BACKUP_OBJECT_STORE_CIDRS", "169.254.0.0/16", "overlaps 169.254.0.0/16"),
        ("CLEO_BACKUP_EGRESS_CIDRS", "64:ff9b::/96", "instance metadata"),
        ("CLEO_BACKUP_OBJECT_STORE_CIDRS", "::ffff:0:0/96", "overlaps ::/16"),
        ("CLEO_BACKUP_EGRESS_CIDRS", "::/0", "is every address"),
        ("CLEO_BACKUP_OBJECT_STORE_CIDRS", "0.0.0.0/0", "name the object stores' addresses"),
        ("CLEO_BACKUP_OBJECT_STORE_CIDRS", "s3.amazonaws.com", "is not an address range"),
        ("CLEO_BACKUP_IMAGE_PULL_SECRETS", "regcred,Reg_Cred", "'Reg_Cred' is not a Secret"),
        ("CLEO_BACKUP_IMAGE_PULL_SECRETS", '["regcred"]', "separate names with commas"),
        ("CLEO_BACKUP_IMAGE_PULL_SECRETS", "reg..cred", "'reg..cred' is not a Secret name"),
        ("CLEO_BACKUP_IMAGE_PULL_SECRETS", "reg.-cred", "DNS subdomain"),
        ("CLEO_BACKUP_IMAGE_PULL_SECRETS", "a" * 254, "253 characters at most"),
        (
            "CLEO_BACKUP_RESOURCES",
            '{"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}',
            "requests.memory: 2Gi is more than limits.memory",
        ),
        ("CLEO_BACKUP_RESOURCES", "{requests: {}}", "not JSON"),
        ("CLEO_BACKUP_RESOURCES", '{"requests": {"cpu": "lots"}}', "requests.cpu:"),
        ("CLEO_BACKUP_RESOURCES", '{"request": {"cpu": "1"}}', "request: Extra inputs"),
        ("CLEO_BACKUP_RESOURCES", '[{"cpu": "1"}]', "the value:"),
        ("CLEO_BACKUP_ONE_OFF_TTL_SECONDS", "1d", "a number of seconds above 0"),
        ("CLEO_BACKUP_ONE_OFF_TTL_SECONDS", "0", "a number of seconds above 0"),
        ("CLEO_BACKUP_ONE_OFF_TTL_SECONDS", "inf", "a number of seconds above 0"),
    ],
)
def test_a_wrong_value_names_its_variable(variable: str, value: str, words: str) -> None:
    with pytest.raises(ValueError, match=variable) as caught:
        BackupSettings.from_environment({variable: value})
    assert words in str(caught.value)


def test_the_older_variable_still_names_the_api_server() -> None:
    older = BackupSettings.from_environment({"CLEO_BACKUP_EGRESS_CIDRS": "127.0.0.0/8"})
    assert older.pod.api_server_cidrs == ("127.0.0.0/8",)
    both = BackupSettings.from_environment(
        {"CLEO_BACKUP_EGRESS_CIDRS": "127.0.0.0/8", "CLEO_BACKUP_API_SERVER_CIDRS": "10.0.0.1/32"}
    )
    assert both.pod.api_server_cidrs == ("10.0.0.1/32",)


def test_addresses_found_at_start_fill_in_only_when_none_are_set() -> None:
    found = ("10.0.0.1/32",)
    assert BackupSettings.from_environment({}).with_api_server(found).pod.api_server_cidrs == (
        found
    )
    pinned = BackupSettings.from_environment({"CLEO_BACKUP_API_SERVER_CIDRS": "192.0.2.1/32"})
    assert pinned.with_api_server(found).pod.api_server_cidrs == ("192.0.2.1/32",)


def test_pull_secrets_resources_and_object_stores_from_the_environment() -> None:
    settings = BackupSettings.from_environment(
        {
            "CLEO_BACKUP_IMAGE_PULL_SECRETS": "regcred, mirror.pull ,regcred,",
            "CLEO_BACKUP_RESOURCES": (
                '{"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": 2147483648}}'
            ),
            "CLEO_BACKUP_OBJECT_STORE_CIDRS": "10.42.7.0/24,2001:db8::/48",
        }
    )
    # Duplicates once, in the order given; the runner pods name the operator's copies.
    assert settings.pull_secret_sources == ("regcred", "mirror.pull")
    assert settings.pod.image_pull_secrets == ("cleo-pull-regcred", "cleo-pull-mirror.pull")
    resources = settings.pod.resources
    assert resources is not None
    assert resources.requests is not None
    assert (resources.requests.cpu, resources.requests.memory) == ("250m", "512Mi")
    assert resources.limits is not None
    assert resources.limits.memory == 2147483648
    assert settings.pod.object_store_cidrs == ("10.42.7.0/24", "2001:db8::/48")
