"""S3 with web identity (IRSA): the runner trades its projected token for a role's keys at STS.

moto implements STS AssumeRoleWithWebIdentity and checks the S3 requests made with the keys
it hands out (signature checking on, as in `s3_support`). Two things of moto's need help,
both at the test's boundary, not in the code under test:

- obstore sends STS its parameters in the query string of an HTTPS POST (as AWS accepts),
  while moto's server recognises an unsigned STS call only by a form body; a small TLS
  relay here, with a certificate of a CA made for the test (given to the runner as
  ``CLEO_OBJECT_STORE_CA_FILE``, as a private STS's would be), moves the query into the body
  and records what the runner sent;
- moto answers an unsigned STS call only within its unauthenticated budget, so the server
  of this module allows one more unauthenticated request than its setup needs: the STS call.

What is shown: the runner's environment as the render side makes it (role, token file, STS
endpoint) reaches STS with the token file's content and the role, and the keys STS returns
sign S3 requests that moto accepts.
"""

from __future__ import annotations

import base64
import http.server
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cleo_operator.backup.object_stores import s3_storage
from cleo_operator.render.backup_identity import AWS_TOKEN_PATH
from tests.harness.postgres import free_loopback_port
from tests.harness.postgres_tls import issue_server_certificate, make_authority
from tests.integration.s3_support import ALLOW_S3, BUCKET, _iam, _unsigned, moto_server

TRUST = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Federated":'
    '"arn:aws:iam::123456789012:oidc-provider/cluster"},'
    '"Action":"sts:AssumeRoleWithWebIdentity"}]}'
)


@dataclass
class WebIdentitySetup:
    endpoint: str
    sts_endpoint: str
    role_arn: str
    ca_file: Path
    sts_calls: list[dict[str, str]] = field(default_factory=list)


def _relay(moto: str, calls: list[dict[str, str]]) -> type[http.server.BaseHTTPRequestHandler]:
    class Relay(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = urllib.parse.urlsplit(self.path).query
            calls.append(dict(urllib.parse.parse_qsl(query)))
            request = urllib.request.Request(  # noqa: S310 - moto on loopback
                moto + "/",
                data=query.encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    status, body = response.status, response.read()
            except urllib.error.HTTPError as error:
                status, body = error.code, error.read()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    return Relay


@pytest.fixture(scope="module")
def web_identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebIdentitySetup]:
    folder = tmp_path_factory.mktemp("web-identity")
    authority = make_authority(folder, "sts")
    certificate = issue_server_certificate(authority, folder)
    # Six setup requests below, then the one STS call (see the module docstring).
    with moto_server(folder, unauthenticated=7) as moto:
        # A user with a policy of its own makes moto check every signature from now on.
        _iam(moto, {"Action": "CreateUser", "UserName": "someone"})
        _iam(moto, {"Action": "CreateAccessKey", "UserName": "someone"})
        _iam(
            moto,
            {
                "Action": "PutUserPolicy",
                "UserName": "someone",
                "PolicyName": "p",
                "PolicyDocument": ALLOW_S3,
            },
        )
        _unsigned(moto, "PUT", f"/{BUCKET}", service="s3")
        created = _iam(
            moto,
            {"Action": "CreateRole", "RoleName": "cleo-backup", "AssumeRolePolicyDocument": TRUST},
        )
        role = re.search(r"<Arn>(.+?)</Arn>", created)
        assert role, created
        _iam(
            moto,
            {
                "Action": "PutRolePolicy",
                "RoleName": "cleo-backup",
                "PolicyName": "backups",
                "PolicyDocument": ALLOW_S3,
            },
        )
        calls: list[dict[str, str]] = []
        relay_port = free_loopback_port()
        relay = http.server.ThreadingHTTPServer(("127.0.0.1", relay_port), _relay(moto, calls))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate.cert, certificate.key)
        relay.socket = context.wrap_socket(relay.socket, server_side=True)
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        try:
            yield WebIdentitySetup(
                endpoint=moto,
                sts_endpoint=f"https://127.0.0.1:{relay_port}",
                role_arn=role.group(1),
                ca_file=authority.cert,
                sts_calls=calls,
            )
        finally:
            relay.shutdown()
            relay.server_close()


def test_the_runner_assumes_its_role_with_the_projected_token(
    web_identity: WebIdentitySetup, tmp_path: Path
) -> None:
    # The token kubelet projects (its file name as the pod gets it); moto does not check
    # the JWT's signature, so any token of the right shape stands in for the cluster's.
    token_file = tmp_path / Path(AWS_TOKEN_PATH).name
    claims = b'{"sub":"system:serviceaccount:acme:cleo-backup-nightly"}'
    token = ".".join(
        base64.urlsafe_b64encode(part).decode().rstrip("=")
        for part in (b'{"alg":"RS256"}', claims, b"signature")
    )
    token_file.write_text(token)
    environ = {  # what render.backup_identity gives the runner for IRSA
        "AWS_ROLE_ARN": web_identity.role_arn,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ENDPOINT_URL_STS": web_identity.sts_endpoint,
        "CLEO_OBJECT_STORE_CA_FILE": str(web_identity.ca_file),
    }
    storage = s3_storage(
        bucket=BUCKET, prefix="irsa/acme", endpoint=web_identity.endpoint, environ=environ
    )

    storage.put_bytes("x.manifest.json", b"{}")

    assert [o.name for o in storage.list()] == ["x.manifest.json"]
    assert storage.read_bytes("x.manifest.json", limit=10) == b"{}"
    (call,) = web_identity.sts_calls  # one exchange; its keys sign every request after it
    assert call["Action"] == "AssumeRoleWithWebIdentity"
    assert call["RoleArn"] == web_identity.role_arn
    assert call["WebIdentityToken"] == token
    assert call["RoleSessionName"] == "cleo-backup"
    assert token not in repr(storage)
