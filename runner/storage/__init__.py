"""Where a run lives: a local folder or object storage, chosen by URL scheme.

One small interface over keys (relative POSIX paths such as ``run-id/model/1.txt``), so the
runner, ``collect`` and ``status`` are written once and behave the same on every store. Which
store serves a URL, and everything else the launcher needs to know of it (its URL rule, whether
pods reach it, its endpoint and the credentials a pod reads), is asked of the scheme registry
(``runner.storage.schemes``); a store's module (boto3 for ``s3://``) is imported only when a URL
of it is opened.
"""

from __future__ import annotations

from runner.errors import StorageURLError
from runner.storage.base import Storage, atomic_write, replacing
from runner.storage.endpoint import endpoint_problem
from runner.storage.local import LocalStorage
from runner.storage.schemes import (
    FOLDER,
    SCHEMES,
    PodAccess,
    Scheme,
    SecretKey,
    check_url,
    expected_outputs,
    open_storage,
    scheme_of,
    url_problem,
)

__all__ = ["FOLDER", "SCHEMES", "LocalStorage", "PodAccess", "Scheme", "SecretKey", "Storage",
           "StorageURLError", "atomic_write", "check_url", "endpoint_problem", "expected_outputs",
           "open_storage", "replacing", "scheme_of", "url_problem"]
