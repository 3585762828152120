"""The pooler's client TLS pair: made for the Service's names, kept while usable, else new."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from cryptography import x509

from cleo_operator.crypto.pooler_tls import (
    RENEW_BEFORE,
    VALIDITY,
    issue_pooler_tls,
    pooler_dns_names,
    tls_state,
    usable_pooler_tls,
)

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
NAMES = {"service": "cleo-pooler", "namespace": "cleo-acme", "cluster_domain": "cluster.local"}


def test_a_new_pair_names_the_service_and_is_usable() -> None:
    tls = issue_pooler_tls(now=NOW, **NAMES)
    cert = x509.load_pem_x509_certificate(tls.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "cleo-pooler",
        "cleo-pooler.cleo-acme",
        "cleo-pooler.cleo-acme.svc",
        "cleo-pooler.cleo-acme.svc.cluster.local",
    ]
    assert pooler_dns_names(**NAMES)[-1] == "cleo-pooler.cleo-acme.svc.cluster.local"
    assert usable_pooler_tls(tls, now=NOW, **NAMES)
    assert "PRIVATE KEY" not in repr(tls)


def test_a_pair_is_replaced_near_its_end_for_another_name_or_a_foreign_key() -> None:
    tls = issue_pooler_tls(now=NOW, **NAMES)
    assert usable_pooler_tls(tls, now=NOW + VALIDITY - RENEW_BEFORE * 2, **NAMES)
    assert not usable_pooler_tls(tls, now=NOW + VALIDITY - RENEW_BEFORE, **NAMES)
    assert not usable_pooler_tls(tls, now=NOW, **{**NAMES, "namespace": "cleo-other"})
    other = issue_pooler_tls(now=NOW, **NAMES)
    assert not usable_pooler_tls(dataclasses.replace(tls, key_pem=other.key_pem), now=NOW, **NAMES)
    assert not usable_pooler_tls(dataclasses.replace(tls, cert_pem="garbage"), now=NOW, **NAMES)


@pytest.mark.security
def test_a_clock_behind_the_issuer_keeps_the_operators_own_certificate() -> None:
    # A new leader whose clock is an hour behind the replica that issued the pair (or a
    # clock stepped back): the pair is "not yet valid" to it, but its issuer is the
    # operator; presenting a new one at once would refuse the workload until its bundle
    # follows. And a fresh certificate is valid from an hour back (nodes that lag).
    tls = issue_pooler_tls(now=NOW, **NAMES)
    cert = x509.load_pem_x509_certificate(tls.cert_pem.encode())
    assert cert.not_valid_before_utc <= NOW - datetime.timedelta(hours=1)
    behind = NOW - datetime.timedelta(hours=3)
    assert usable_pooler_tls(tls, now=behind, **NAMES)
    state = tls_state(current=tls, staged=None, trusted=tls.cert_pem, now=behind, **NAMES)
    assert state.current == tls
