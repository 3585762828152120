"""S3 (and S3-compatible) object storage for backups, on the standard library only.

Why no boto3: the backup pod needs five S3 calls, and boto3 with botocore is a large
dependency whose pins (python-dateutil < 3) conflict with the Kubernetes client's. So this
module speaks the S3 REST API itself: `http.client` for HTTP, `hmac`/`hashlib` for AWS
Signature Version 4 (`sign_request`), `xml.etree` for the few XML answers.

How the `Storage` contract maps to S3:

- atomic writes: an object becomes visible only when PutObject or CompleteMultipartUpload
  succeeds, so the temporary name of a directory is S3's unfinished multipart upload.
  `writer` buffers one part (`part_size`, 8 MiB by default; S3's minimum is 5 MiB except
  for the last) and uploads it as soon as it is full, so memory stays at about one part
  whatever the archive's size; an object smaller than one part is one PutObject. On any
  exception the multipart upload is aborted; a killed process leaves an unfinished upload,
  which `clean_incomplete` aborts later (ListMultipartUploads);
- never overwriting: a HEAD before the write refuses an existing name, and the write
  itself carries `If-None-Match: *` where the store supports conditional writes;
- names are keys under `prefix/`; listing is ListObjectsV2, page by page.

Credentials never appear in reprs, messages or logs. Requests that may be repeated safely
(everything but completing an upload) are retried on connection errors and 5xx answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import http.client
import logging
import os
import ssl
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cleo_operator.backup.errors import StorageError, StorageFull
from cleo_operator.backup.storage import (
    OBJECT_NAME_PATTERN,
    ObjectInfo,
    ReadStream,
    WriteStream,
    check_object_name,
    copy_stream,
)
from cleo_operator.core.times import parse_rfc3339

__all__ = ["S3Credentials", "S3Storage", "sign_request"]

logger = logging.getLogger(__name__)

EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
MIN_PART_SIZE: Final = 5 << 20
"""S3's smallest part, except for the last one."""
DEFAULT_PART_SIZE: Final = 8 << 20
_NS: Final = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_FULL_CODES: Final = frozenset({"EntityTooLarge", "QuotaExceeded", "XMinioStorageFull"})
_ATTEMPTS: Final = 3


@dataclass(frozen=True)
class S3Credentials:
    """An access key; the secret (and session token) never show in reprs."""

    access_key_id: str
    """The access key id (not secret: it names the key)."""
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    """A session token, for temporary credentials."""

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("S3Credentials cannot be pickled")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> S3Credentials:
        """From AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)."""
        env = os.environ if environ is None else environ
        key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if not key_id or not secret:
            raise ValueError(
                "S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(from the Secret named by spec.destination.s3.credentialsSecret)"
            )
        return cls(key_id, secret, env.get("AWS_SESSION_TOKEN") or None)


def _quote(value: str, *, safe: str = "-_.~") -> str:
    return urllib.parse.quote(value, safe=safe)


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_request(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    credentials: S3Credentials,
    region: str,
    now: datetime,
    service: str = "s3",
) -> dict[str, str]:
    """AWS Signature Version 4 for S3: the headers to send (Authorization included).

    `path` is the already URI-encoded path (S3 encodes it once, not twice); `query` holds
    the raw parameters; every header given is signed, plus host, x-amz-date and
    x-amz-content-sha256.
    """
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    date = stamp[:8]
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = stamp
    signed["x-amz-content-sha256"] = payload_sha256
    if credentials.session_token:
        signed["x-amz-security-token"] = credentials.session_token
    names = sorted(signed)
    canonical_query = "&".join(
        f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items(), key=lambda kv: kv[0])
    )
    canonical_request = "\n".join(
        [
            method,
            path,
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            stamp,
            scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    signature = hmac.new(
        _signing_key(credentials.secret_access_key, date, region, service),
        string_to_sign.encode("utf-8"),
        hashlib.sha256,
    ).hexdigest()
    out = {name: signed[name] for name in names}
    out["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


@dataclass
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class _RetryableError(Exception):
    """A failure worth one more attempt (connection trouble, 5xx)."""


class S3Storage:
    """A bucket (and key prefix) as backup storage; see the module docstring."""

    def __init__(
        self,
        *,
        bucket: str,
        credentials: S3Credentials,
        prefix: str = "",
        endpoint: str | None = None,
        region: str = "us-east-1",
        part_size: int = DEFAULT_PART_SIZE,
        timeout: float = 60.0,
        ca_file: str | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.part_size = part_size
        self._credentials = credentials
        self._timeout = timeout
        url = urllib.parse.urlsplit(endpoint or f"https://s3.{region}.amazonaws.com")
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"S3 endpoint {endpoint!r} must be an http:// or https:// URL")
        self._tls = url.scheme == "https"
        self._host = url.netloc
        self._base_path = url.path.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=ca_file) if self._tls else None
        self.endpoint = f"{url.scheme}://{url.netloc}{self._base_path}"

    def __repr__(self) -> str:
        return (
            f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r})"
        )

    @property
    def description(self) -> str:
        where = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"S3 bucket {where} at {self.endpoint}"

    # -- requests --------------------------------------------------------------------

    def _key(self, name: str) -> str:
        check_object_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _path(self, key: str | None) -> str:
        # Path-style addressing: /bucket/key, each segment encoded once (S3's rule).
        path = f"{self._base_path}/{_quote(self.bucket)}"
        if key is not None:
            path += "/" + _quote(key, safe="-_.~/")
        return path

    def _connection(self) -> http.client.HTTPConnection:
        if self._tls:
            return http.client.HTTPSConnection(self._host, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, timeout=self._timeout)

    def _send(
        self,
        method: str,
        *,
        key: str | None,
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        doing: str,
        retry: bool = True,
        stream: bool = False,
    ) -> tuple[_Response, http.client.HTTPConnection | None, http.client.HTTPResponse | None]:
        query = dict(query or {})
        path = self._path(key)
        target = path + (
            "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote) if query else ""
        )
        payload_sha256 = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        attempts = _ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            signed = sign_request(
                method=method,
                host=self._host,
                path=path,
                query=query,
                headers=dict(headers or {}),
                payload_sha256=payload_sha256,
                credentials=self._credentials,
                region=self.region,
                now=datetime.now(UTC),
            )
            if body:
                signed["content-length"] = str(len(body))
            elif method in ("PUT", "POST"):
                signed["content-length"] = "0"
            conn = self._connection()
            try:
                conn.request(method, target, body=body or None, headers=signed)
                response = conn.getresponse()
                if stream and response.status == 200:
                    return _Response(response.status, response.headers, b""), conn, response
                data = response.read()
                conn.close()
                if response.status >= 500 and attempt < attempts:
                    raise _RetryableError(f"HTTP {response.status}")
                return _Response(response.status, response.headers, data), None, None
            except (OSError, http.client.HTTPException, _RetryableError) as error:
                conn.close()
                if attempt == attempts:
                    detail = error.strerror if isinstance(error, OSError) else str(error)
                    raise StorageError(
                        f"{self.description}: {doing} failed: {detail or type(error).__name__}"
                        f" (after {attempt} attempts)"
                    ) from None
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _call(
        self,
        method: str,
        *,
        key: str | None,
        doing: str,
        ok: tuple[int, ...] = (200,),
        query: Mapping[str, str] | None = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> _Response:
        response, _, _ = self._send(
            method, key=key, query=query, body=body, headers=headers, doing=doing, retry=retry
        )
        if response.status not in ok:
            raise self._error(response, doing=doing)
        return response

    def _error(self, response: _Response, *, doing: str) -> StorageError:
        code, message = "", ""
        with contextlib.suppress(ET.ParseError):
            if response.body:
                root = ET.fromstring(response.body)  # noqa: S314 - the store's own error XML
                code = root.findtext("Code") or ""
                message = root.findtext("Message") or ""
        detail = f"HTTP {response.status}" + (f" {code}" if code else "")
        if message:
            detail += f": {message}"
        if code in _FULL_CODES:
            return StorageFull(
                f"{self.description} refused the data ({detail}) while {doing}; nothing of the "
                "unfinished object was kept. Raise the quota or lower retention."
            )
        hint = ""
        if response.status in (401, 403):
            hint = "; check the credentials Secret and the bucket policy"
        elif code == "NoSuchBucket":
            hint = "; create the bucket or fix spec.destination.s3.bucket"
        return StorageError(f"{self.description}: {doing} failed: {detail}{hint}")

    # -- Storage ---------------------------------------------------------------------

    def create_bucket(self) -> None:
        """Create the bucket (for first setup and tests); an existing one of ours is fine."""
        body = b""
        if self.region != "us-east-1":
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{self.region}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        response, _, _ = self._send("PUT", key=None, body=body, doing="creating the bucket")
        if response.status == 200:
            return
        error = self._error(response, doing="creating the bucket")
        if "BucketAlreadyOwnedByYou" not in error.message:
            raise error

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[WriteStream]:
        key = self._key(name)
        if self.stat(name) is not None:
            raise StorageError(
                f"{self.description}: {name} already exists; backups are never overwritten"
            )
        upload = _Upload(self, key=key, name=name)
        try:
            yield upload
            upload.finish()
        except BaseException:
            upload.abort()
            raise

    def put(self, name: str, source: ReadStream) -> int:
        with self.writer(name) as out:
            return copy_stream(source, out)

    def put_bytes(self, name: str, data: bytes) -> None:
        with self.writer(name) as out:
            out.write(data)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[ReadStream]:
        key = self._key(name)
        response, conn, raw = self._send("GET", key=key, doing=f"reading {name}", stream=True)
        if raw is None or conn is None:
            if response.status == 404:
                raise StorageError(f"{self.description}: {name} does not exist")
            raise self._error(response, doing=f"reading {name}")
        reader = _BodyReader(raw, storage=self.description, name=name)
        try:
            yield reader
        finally:
            conn.close()

    def read_bytes(self, name: str, *, limit: int) -> bytes:
        with self.open(name) as reader:
            data = reader.read(limit + 1)
        if len(data) > limit:
            raise StorageError(f"{self.description}: {name} is larger than {limit} bytes")
        return data

    def stat(self, name: str) -> ObjectInfo | None:
        response = self._call("HEAD", key=self._key(name), doing=f"reading {name}", ok=(200, 404))
        if response.status == 404:
            return None
        size = int(response.headers.get("Content-Length", "0"))
        modified = response.headers.get("Last-Modified")
        when = (
            datetime.strptime(modified, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
            if modified
            else datetime.now(UTC)
        )
        return ObjectInfo(name=name, size=size, modified=when)

    def list(self) -> list[ObjectInfo]:
        prefix = f"{self.prefix}/" if self.prefix else ""
        objects: list[ObjectInfo] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "delimiter": "/"}
            if token:
                query["continuation-token"] = token
            root = self._xml(self._call("GET", key=None, query=query, doing="listing"))
            for item in root.iter(f"{_NS}Contents"):
                name = (item.findtext(f"{_NS}Key") or "")[len(prefix) :]
                if OBJECT_NAME_PATTERN.fullmatch(name) is None:
                    continue
                objects.append(
                    ObjectInfo(
                        name=name,
                        size=int(item.findtext(f"{_NS}Size") or "0"),
                        modified=_parse_time(item.findtext(f"{_NS}LastModified")),
                    )
                )
            if root.findtext(f"{_NS}IsTruncated") != "true":
                break
            token = root.findtext(f"{_NS}NextContinuationToken")
        return sorted(objects, key=lambda o: o.name)

    def delete(self, name: str) -> bool:
        if self.stat(name) is None:
            return False
        self._call("DELETE", key=self._key(name), doing=f"deleting {name}", ok=(200, 204))
        return True

    def clean_incomplete(self, *, older_than: datetime) -> int:
        prefix = f"{self.prefix}/" if self.prefix else ""
        root = self._xml(
            self._call(
                "GET",
                key=None,
                query={"uploads": "", "prefix": prefix},
                doing="listing unfinished uploads",
            )
        )
        removed = 0
        for upload in root.iter(f"{_NS}Upload"):
            started = _parse_time(upload.findtext(f"{_NS}Initiated"))
            if started >= older_than:
                continue  # perhaps a backup that is running right now
            key = upload.findtext(f"{_NS}Key") or ""
            upload_id = upload.findtext(f"{_NS}UploadId") or ""
            self._call(
                "DELETE",
                key=key,
                query={"uploadId": upload_id},
                ok=(200, 204, 404),
                doing="aborting an unfinished upload",
            )
            removed += 1
        return removed

    def _xml(self, response: _Response) -> ET.Element:
        try:
            return ET.fromstring(response.body)  # noqa: S314 - the store's own answer
        except ET.ParseError:
            raise StorageError(f"{self.description}: the answer is not XML") from None


def _parse_time(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    return parse_rfc3339(text)


class _BodyReader:
    """A GET's body as a ReadStream; read errors name the object."""

    def __init__(self, response: http.client.HTTPResponse, *, storage: str, name: str) -> None:
        self._response = response
        self._storage = storage
        self._name = name

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._response.read(None if size < 0 else size)
        except (OSError, http.client.HTTPException) as error:
            raise StorageError(
                f"{self._storage}: reading {self._name} failed: {type(error).__name__}"
            ) from None


@dataclasses.dataclass
class _Upload:
    """One object being written: a buffered part, then a multipart upload if it grows."""

    storage: S3Storage
    key: str
    name: str
    buffer: bytearray = dataclasses.field(default_factory=bytearray)
    upload_id: str | None = None
    parts: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    written: int = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        while view:
            room = self.storage.part_size - len(self.buffer)
            self.buffer += view[:room]
            view = view[room:]
            if len(self.buffer) >= self.storage.part_size:
                self._upload_part()
        self.written += size
        return size

    def _upload_part(self) -> None:
        doing = f"writing {self.name}"
        if self.upload_id is None:
            root = self.storage._xml(
                self.storage._call("POST", key=self.key, query={"uploads": ""}, doing=doing)
            )
            self.upload_id = root.findtext(f"{_NS}UploadId")
            if not self.upload_id:
                raise StorageError(f"{self.storage.description}: no UploadId while {doing}")
        number = len(self.parts) + 1
        response = self.storage._call(
            "PUT",
            key=self.key,
            query={"partNumber": str(number), "uploadId": self.upload_id},
            body=bytes(self.buffer),
            doing=f"{doing} (part {number}, after {self.written} bytes)",
        )
        etag = response.headers.get("ETag", "")
        self.parts.append((number, etag))
        self.buffer.clear()

    def finish(self) -> None:
        doing = f"writing {self.name}"
        if self.upload_id is None:
            # Small enough for one request; If-None-Match refuses to replace an object
            # that appeared meanwhile (where the store supports conditional writes).
            self.storage._call(
                "PUT",
                key=self.key,
                body=bytes(self.buffer),
                headers={"If-None-Match": "*"},
                doing=doing,
            )
            return
        if self.buffer:
            self._upload_part()
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
            for n, etag in self.parts
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()
        response = self.storage._call(
            "POST",
            key=self.key,
            query={"uploadId": self.upload_id},
            body=body,
            headers={"If-None-Match": "*"},
            doing=doing,
            retry=False,
        )
        # S3 may answer 200 with an error document once it has started streaming.
        if b"<Error>" in response.body:
            raise self.storage._error(dataclasses.replace(response, status=500), doing=doing)

    def abort(self) -> None:
        if self.upload_id is None:
            return
        try:
            self.storage._call(
                "DELETE",
                key=self.key,
                query={"uploadId": self.upload_id},
                ok=(200, 204, 404),
                doing=f"aborting the upload of {self.name}",
            )
        except StorageError as error:
            # The failure that led here matters more; clean_incomplete retries later.
            logger.warning("%s", error.message)
