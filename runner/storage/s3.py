"""``s3://bucket/prefix``: a run in S3-compatible object storage (AWS S3, MinIO, Ceph RGW...).

Imported only when an ``s3://`` output is used. Every botocore call goes through ``_errors``,
the one place where transport and service failures become a ``StorageError`` with a message a
person can act on; nothing else in medbench sees a botocore exception.

Settings, all optional:

- endpoint: the ``endpoint_url`` argument (callers pass ``cluster.s3_endpoint``), else
  ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else AWS S3 itself;
- credentials: boto3's usual chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_SESSION_TOKEN``, a profile, a pod identity), never the config file;
- ``MEDBENCH_S3_ADDRESSING``: ``path`` / ``virtual`` / ``auto``; default ``path`` when an
  endpoint is set (MinIO and most Ceph set-ups need it), ``auto`` for AWS;
- ``MEDBENCH_S3_RETRY_MODE`` (``standard`` or ``adaptive``) and ``MEDBENCH_S3_MAX_ATTEMPTS``
  (default 8): back-off with jitter on throttling (SlowDown, 503) and 5xx.

botocore's retries end when a response's headers arrive: a body cut mid-way (IncompleteRead)
or stalled is read afterwards, outside them. ``_get`` retries those reads itself, with the same
attempts and a back-off like botocore's, so a dropped connection is ridden out on every read.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from runner.env import env_whole_number
from runner.errors import StorageError, StorageNotFound, StorageURLError
from runner.redact import remember
from runner.storage.base import Storage, replacing
from runner.storage.endpoint import endpoint_problem
from runner.storage.etag import matches as etag_matches
from runner.storage.etag import parts_count, parts_etag
from runner.storage.schemes import SCHEMES

log = logging.getLogger("medbench.storage")

MiB = 1024 * 1024

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
}
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)
# A response body that stopped coming: the connection was cut (urllib3's IncompleteRead, seen
# as ResponseStreamingError or botocore's own length check) or stalled past the read timeout.
_CUT_BODY = (IncompleteReadError, ResponseStreamingError, ReadTimeoutError)
# Back-off between reads of a cut body: full jitter, as botocore's standard mode.
_BACKOFF_BASE, _BACKOFF_CAP = 0.5, 20.0
# Downloads of one file that differs from its listing before collect gives up on it.
_DOWNLOADS = 3

CREDENTIALS_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment or in .env "
    "(in the cluster they come from the S3 Secret, cluster.secrets.s3); "
    "they are never read from models.yaml"
)


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """The explicit endpoint, else the standard AWS environment variables (S3-specific first)."""
    return (
        endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


class S3Storage(Storage):
    """Keys under ``s3://bucket/prefix``. A PUT is atomic, so every write is all-or-nothing."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        addressing_style: str | None = None,
        retry_mode: str | None = None,
        max_attempts: int | None = None,
        multipart_threshold: int = 16 * MiB,
        multipart_chunksize: int = 8 * MiB,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ):
        self.bucket, self.prefix = SCHEMES["s3"].split(url)  # the one URL rule, checked
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = resolve_endpoint(endpoint_url)
        problem = self.endpoint_url and endpoint_problem(self.endpoint_url)
        if problem:
            raise StorageURLError(f"the S3 endpoint (--endpoint, cluster.s3_endpoint, AWS_ENDPOINT_URL_S3 or "
                                  f"AWS_ENDPOINT_URL) {problem}")
        addressing = addressing_style or os.environ.get("MEDBENCH_S3_ADDRESSING") or (
            "path" if self.endpoint_url else "auto")
        if addressing not in ("path", "virtual", "auto"):
            raise StorageError(f"MEDBENCH_S3_ADDRESSING={addressing!r}: expected path, virtual or auto")
        mode = retry_mode or os.environ.get("MEDBENCH_S3_RETRY_MODE") or "standard"
        if mode not in ("standard", "adaptive"):
            raise StorageError(f"MEDBENCH_S3_RETRY_MODE={mode!r}: expected standard or adaptive")
        attempts = max_attempts or env_whole_number("MEDBENCH_S3_MAX_ATTEMPTS", 8)
        self.max_attempts = attempts
        self.multipart_chunksize = multipart_chunksize
        config = Config(
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            retries={"mode": mode, "total_max_attempts": attempts},  # the first try included
            s3={"addressing_style": addressing},
            # boto3 >= 1.36 adds CRC checksums to every request by default; MinIO and Ceph
            # versions in the wild reject or mis-verify them. Only send them where S3 insists.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=32,
        )
        # A session of our own: the default session is shared and not safe across threads.
        session = boto3.session.Session()
        _remember_credentials(session)
        self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=4,
        )

    # --- the one choke point for botocore errors ------------------------------------------

    @property
    def where(self) -> str:
        return self.endpoint_url or "AWS S3"

    @contextlib.contextmanager
    def _errors(self, op: str, key: str | None = None) -> Iterator[None]:
        target = f"s3://{self.bucket}/{key}" if key is not None else self.url
        try:
            yield
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise StorageError(f"no S3 credentials for {target}: {CREDENTIALS_HINT}") from e
        except _UNREACHABLE as e:
            raise StorageError(f"cannot reach S3 endpoint {self.where}: {e}") from e
        except ClientError as e:
            raise self._client_error(op, target, e) from e
        except (S3UploadFailedError, RetriesExceededError) as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, ClientError):
                raise self._client_error(op, target, cause) from e
            if isinstance(cause, _UNREACHABLE):
                raise StorageError(f"cannot reach S3 endpoint {self.where}: {cause}") from e
            raise StorageError(f"S3 {op} {target} failed: {e}") from e
        except BotoCoreError as e:
            raise StorageError(f"S3 {op} {target} failed: {e}") from e

    def _client_error(self, op: str, target: str, e: ClientError) -> StorageError:
        err = e.response.get("Error", {})
        code = str(err.get("Code", "")) or "?"
        message = err.get("Message") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        if code == "NoSuchBucket":
            return StorageError(
                f"bucket '{self.bucket}' does not exist at {self.where}; create it "
                f"(e.g. aws s3 mb s3://{self.bucket}) or fix 'output:'"
            )
        if code in _NOT_FOUND:
            return StorageNotFound(f"{target}: not found")
        if code in _DENIED:
            return StorageError(
                f"S3 refused {op} on {target} ({code}: {message}); check the credentials: {CREDENTIALS_HINT}"
            )
        attempts = e.response.get("ResponseMetadata", {}).get("RetryAttempts")
        tries = f" after {attempts + 1} attempts" if attempts else ""
        return StorageError(f"S3 {op} {target} failed{tries}: {code}: {message}")

    # --- keys ----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if any(p == ".." for p in parts):
            raise StorageError(f"refusing key with '..': {key}")
        return "/".join([self.prefix, *parts]) if self.prefix else "/".join(parts)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    # --- Storage ---------------------------------------------------------------------------

    def write_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        with self._errors("PutObject", full):
            if len(data) >= self._transfer.multipart_threshold:
                self._client.upload_fileobj(io.BytesIO(data), self.bucket, full, Config=self._transfer)
            else:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=data)

    def read_bytes(self, key: str) -> bytes:
        return self._get(self._key(key))[0]

    def _get(self, full: str) -> tuple[bytes, dict]:
        """GetObject with its whole body (and the response's other fields), the body's read
        retried when the connection is cut mid-way."""
        attempt = 1
        while True:
            with self._errors("GetObject", full):
                obj = self._client.get_object(Bucket=self.bucket, Key=full)
                try:
                    return obj["Body"].read(), obj
                except _CUT_BODY as e:
                    obj["Body"].close()
                    if attempt >= self.max_attempts:
                        raise StorageError(f"S3 GetObject s3://{self.bucket}/{full} failed after "
                                           f"{attempt} attempts: the body was cut short: {e}") from e
                    log.debug("GetObject %s: body cut short (%s); reading it again", full, e)
            time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1))))
            attempt += 1

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except StorageNotFound:
            return False
        return True

    def _head(self, key: str) -> dict:
        full = self._key(key)
        with self._errors("HeadObject", full):
            return self._client.head_object(Bucket=self.bucket, Key=full)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.list_info(prefix))

    def list_info(self, prefix: str = "") -> dict[str, tuple[int, str | None]]:
        """Every key under ``prefix`` with its size and ETag, from the listing alone.

        ``prefix`` names a folder, as with a local path: ``run/a`` holds ``run/a/1.txt`` and
        not ``run/ab/1.txt``.
        """
        base = self._key(prefix) if prefix.strip("/") else self.prefix
        out: dict[str, tuple[int, str | None]] = {}
        with self._errors("ListObjectsV2", base):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base)
            for page in pages:
                for obj in page.get("Contents", []):
                    full = obj["Key"]
                    if full.endswith("/"):
                        continue  # a "folder" marker some tools create
                    if base and not (full == base or full.startswith(base + "/")):
                        continue
                    out[self._rel(full)] = (obj["Size"], _etag(obj.get("ETag")))
        return out

    def delete(self, key: str) -> None:
        full = self._key(key)
        with self._errors("DeleteObject", full):
            self._client.delete_object(Bucket=self.bucket, Key=full)

    def upload_file(self, key: str, path: Path) -> None:
        """Multipart above the threshold (16 MiB), so large files survive flaky links."""
        full = self._key(key)
        with self._errors("upload", full):
            self._client.upload_file(str(path), self.bucket, full, Config=self._transfer)

    def download_file(self, key: str, path: Path, *,
                      size: int | None = None, etag: str | None = None) -> None:
        """Into a temporary file beside ``path``, then renamed: never a half-written file.

        Given the listing's ``size`` and ``etag``, the download is checked against them before
        the rename (see ``_mismatch``) and fetched again when it differs; one that still
        differs after ``_DOWNLOADS`` tries is a ``StorageError``, ``path`` left as it was.
        """
        full = self._key(key)
        path = Path(path)
        problem = ""
        for attempt in range(1, _DOWNLOADS + 1):
            try:
                with replacing(path) as tmp:  # the umask's mode, not mkstemp's 0600
                    with self._errors("download", full):
                        self._client.download_file(self.bucket, full, str(tmp), Config=self._transfer)
                    problem = self._mismatch(full, tmp, size, etag) if size is not None else ""
                    if problem:
                        raise _Mismatch(problem)
                return
            except _Mismatch:
                pass  # ``path`` is as it was
            if attempt == _DOWNLOADS:
                break
            log.warning("s3://%s/%s: the download %s; fetching it again", self.bucket, full, problem)
            time.sleep(random.uniform(0, _BACKOFF_BASE * 2 ** (attempt - 1)))
            # A run still going may have rewritten the key since it was listed: check against
            # what the store holds now.
            size, etag = self.size_and_etag(key)
        raise StorageError(f"s3://{self.bucket}/{full}: the download {problem}, {_DOWNLOADS} times; "
                           f"{path} was left as it was; collect again")

    def _mismatch(self, full: str, tmp: Path, size: int, etag: str | None) -> str:
        """How the downloaded ``tmp`` differs from the listing's ``size`` and ``etag``; "" when
        it does not.

        The size always counts. A plain ETag is the MD5 of the body; a multipart one
        (``...-N``) is checked for the likely part sizes, then, if none fits, for the exact
        sizes the store gives part by part. An object encrypted with SSE-KMS or SSE-C has an
        ETag that is no MD5: its size is all there is to check.
        """
        got = tmp.stat().st_size
        if got != size:
            return f"holds {got} bytes where the listing says {size}"
        if etag is None or etag_matches(tmp, etag, ours=self.multipart_chunksize):
            return ""
        with self._errors("HeadObject", full):
            head = self._client.head_object(Bucket=self.bucket, Key=full)
        if head.get("ServerSideEncryption") == "aws:kms" or head.get("SSECustomerAlgorithm"):
            return ""
        count = parts_count(etag)
        if count:
            with self._errors("HeadObject", full):
                parts = [self._client.head_object(Bucket=self.bucket, Key=full, PartNumber=n)["ContentLength"]
                         for n in range(1, count + 1)]
            if sum(parts) == size and parts_etag(tmp, parts) == etag:
                return ""
        return f"does not match the listing (its MD5 differs from the ETag {etag})"

    def matches_file(self, key: str, path: Path, size: int, etag: str | None) -> bool:
        """The size, then the ETag: the MD5 of a single-part upload, of its parts' MD5s for a
        multipart one (the likely part sizes, ours first). No ETag, or one that is no MD5
        (SSE-KMS): not known to match, so collect downloads it again."""
        if etag is None or not path.is_file() or path.stat().st_size != size:
            return False
        return etag_matches(path, etag, ours=self.multipart_chunksize)

    def size_and_etag(self, key: str) -> tuple[int, str | None]:
        head = self._head(key)
        return head["ContentLength"], _etag(head.get("ETag"))

    # --- conditional writes (If-None-Match / If-Match), for leases ---------------------------
    #
    # AWS S3 (since 2024), MinIO and moto honour them. A store that ignores the headers
    # writes unconditionally; the lease module reads every write back, which catches a lost
    # race there (docs/storage.md, "Leases").

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data, obj = self._get(self._key(key))
        return data, _etag(obj.get("ETag")) or ""

    def create_new(self, key: str, data: bytes) -> str | None:
        try:
            return self._put_if(key, data, IfNoneMatch="*")
        except _Unconditional:
            return super().create_new(key, data)

    def replace_versioned(self, key: str, data: bytes, version: str) -> str | None:
        try:
            return self._put_if(key, data, IfMatch=f'"{version}"')
        except _Unconditional:
            return super().replace_versioned(key, data, version)

    def _put_if(self, key: str, data: bytes, **condition: str) -> str | None:
        full = self._key(key)
        try:
            with self._errors("PutObject", full):
                out = self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
        except StorageNotFound:
            return None  # If-Match on a key that is gone
        except StorageError as e:
            code = _code(e.__cause__) if isinstance(e.__cause__, ClientError) else ""
            if code in _CONDITION_FAILED:
                return None
            if code in _NOT_SUPPORTED:
                raise _Unconditional from e  # a store that refuses the header: check, then write
            raise
        return _etag(out.get("ETag")) or ""


# 412 when the condition does not hold; 409 when another conditional write to the key is in flight.
_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


# A store that refuses conditional headers outright rather than ignoring them.
_NOT_SUPPORTED = {"NotImplemented", "501"}


class _Unconditional(Exception):
    """This store does not do conditional writes."""


def _remember_credentials(session: boto3.session.Session) -> None:
    """The secret key and session token this client signs with, for ``runner.redact`` to scrub
    from any text (botocore's debug log prints the token in every request's headers)."""
    try:
        credentials = session.get_credentials()
    except BotoCoreError:  # a broken profile: the first request reports it
        return
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        for secret in (frozen.secret_key, frozen.token):
            if secret:
                remember(secret)


class _Mismatch(Exception):
    """A download that differs from the listing: it replaces nothing."""


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _etag(raw: str | None) -> str | None:
    return raw.strip('"') if raw else None
