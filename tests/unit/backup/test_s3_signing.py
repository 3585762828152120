"""AWS Signature Version 4 against independent vectors: AWS's own example, and botocore's."""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from cleo_operator.backup.s3 import EMPTY_SHA256, S3Credentials, S3Storage, sign_request


def signature(headers: dict[str, str]) -> str:
    return headers["authorization"].rsplit("Signature=", 1)[1]


def test_the_example_of_the_s3_documentation() -> None:
    # "Example: GET Object" of the S3 API reference (Authenticating Requests, SigV4).
    headers = sign_request(
        method="GET",
        host="examplebucket.s3.amazonaws.com",
        path="/test.txt",
        query={},
        headers={"Range": "bytes=0-9"},
        payload_sha256=EMPTY_SHA256,
        credentials=S3Credentials(
            "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        ),
        region="us-east-1",
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert headers["x-amz-date"] == "20130524T000000Z"


# Computed with botocore 1.44.8's S3SigV4Auth for the same requests: query strings with
# characters that need encoding, an empty parameter, a session token, a body, a custom
# endpoint with a port, and a key with a space.
NOW = datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@dataclass(frozen=True)
class Case:
    method: str
    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    region: str
    token: str | None
    expected: str


CASES = [
    Case(
        "PUT",
        "s3.eu-west-1.amazonaws.com",
        "/my-bucket/cleo/acme/20260301T120000Z-1a2b3c4d.archive",
        {"partNumber": "3", "uploadId": "abc/def+ghi=="},
        {"If-None-Match": "*"},
        b"part three of the archive",
        "eu-west-1",
        None,
        "cce686f2f93ed6366eb6530344d086258c98481d1cc4190a609ff76992ec89bc",
    ),
    Case(
        "GET",
        "127.0.0.1:9000",
        "/backups",
        {
            "list-type": "2",
            "prefix": "cleo/acme/",
            "delimiter": "/",
            "continuation-token": "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=",
        },
        {},
        b"",
        "us-east-1",
        "session-token-xyz",
        "823bd55541635a54e7de8d0ac85337fb43ccfbce1c10a7e227a97f6b5e08a173",
    ),
    Case(
        "POST",
        "127.0.0.1:9000",
        "/backups/x%20y.archive",
        {"uploads": ""},
        {},
        b"",
        "us-east-1",
        None,
        "3bc5c74ecb7b4c9914cc9dbde287d7d4d08edb810ac57ee7c65371598a1ce55f",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.method for c in CASES])
def test_signatures_match_botocore(case: Case) -> None:
    signed = sign_request(
        method=case.method,
        host=case.host,
        path=case.path,
        query=case.query,
        headers=case.headers,
        payload_sha256=hashlib.sha256(case.body).hexdigest(),
        credentials=S3Credentials("AKIDEXAMPLE", SECRET, case.token),
        region=case.region,
        now=NOW,
    )
    assert signature(signed) == case.expected
    if case.token:
        assert signed["x-amz-security-token"] == case.token


def test_credentials_stay_out_of_reprs_and_messages() -> None:
    credentials = S3Credentials("AKIDEXAMPLE", SECRET, "token-" + "t" * 20)
    storage = S3Storage(bucket="backups", credentials=credentials, endpoint="http://h:9000")
    for text in (repr(credentials), repr(storage), storage.description):
        assert SECRET not in text
        assert "token-" not in text
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(credentials)


def test_credentials_from_the_environment() -> None:
    env = {"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": SECRET}
    assert S3Credentials.from_environment(env) == S3Credentials("AKID", SECRET)
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        S3Credentials.from_environment({"AWS_ACCESS_KEY_ID": "AKID"})


def test_settings_are_checked() -> None:
    credentials = S3Credentials("AKID", SECRET)
    with pytest.raises(ValueError, match="at least 5242880 bytes"):
        S3Storage(bucket="b-1", credentials=credentials, part_size=1 << 20)
    with pytest.raises(ValueError, match="must be an http:// or https:// URL"):
        S3Storage(bucket="b-1", credentials=credentials, endpoint="ftp://x")
    aws = S3Storage(bucket="b-1", credentials=credentials, region="eu-central-1", prefix="/a/b/")
    assert aws.endpoint == "https://s3.eu-central-1.amazonaws.com"
    assert aws.description == "S3 bucket b-1/a/b at https://s3.eu-central-1.amazonaws.com"
