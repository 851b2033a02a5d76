"""Where a run lives: a local folder or S3-compatible object storage, chosen by URL scheme.

One small interface over keys (relative POSIX paths such as ``run-id/model/1.txt``), so the
runner, ``collect`` and ``status`` are written once and behave the same on both. boto3 is
imported only when an ``s3://`` URL is opened.
"""

from __future__ import annotations

from runner.errors import StorageURLError
from runner.storage.base import Storage, atomic_write
from runner.storage.endpoint import endpoint_problem
from runner.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StorageURLError", "atomic_write", "endpoint_problem", "is_s3",
           "open_storage"]


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def open_storage(url: str, *, endpoint_url: str | None = None) -> Storage:
    """A Storage for a local folder or ``s3://bucket/prefix``."""
    if is_s3(url):
        from runner.storage.s3 import S3Storage

        return S3Storage(url, endpoint_url=endpoint_url)
    if "://" in url:
        raise StorageURLError(f"output {url!r}: unsupported scheme; use a local folder or s3://bucket/prefix")
    return LocalStorage(url)
