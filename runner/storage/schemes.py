"""Which storage serves an output URL: one registry of schemes that every caller asks.

A URL without ``://`` is a local folder (``FOLDER``); ``<name>://bucket/prefix`` is the scheme
registered under ``<name>`` in ``SCHEMES``. Each entry says, as data, everything the rest of
medbench needs to know about its store, so that no caller tests a URL's text or a storage's
class:

- which ``Storage`` class serves it (``"module:Class"``, imported on first open, so boto3 is
  imported only when an ``s3://`` URL is opened);
- its URL rule (a bucket name, then a prefix that cannot climb out of itself), checked for
  models.yaml's ``output:``, ``launcher run --output`` and ``--from`` alike;
- whether it is ``remote``: reached over the network, so pods reach the staged run themselves
  and need no shared PersistentVolumeClaim (a folder is not);
- its endpoint (the ``cluster:`` key that sets it, and the variable a pod gets it in) and the
  keys of the Kubernetes Secret a pod reads its credentials from.

Adding a scheme is one module (its ``Storage`` class) and one entry here: docs/development.md,
"Adding a storage scheme".
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from runner.errors import StorageURLError
from runner.storage.base import Storage

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SecretKey:
    """One key of a Kubernetes Secret that a pod reads into a variable (by secretKeyRef)."""

    env: str
    secret: str
    key: str
    #: Optional keys let a pod start without the Secret (a workload identity stands in for it).
    optional: bool = True
    #: Why the pods need it after all ("" when they may do without): ``submit``'s preflight
    #: then checks that the Secret holds it.
    needed: str = ""


@dataclass(frozen=True)
class PodAccess:
    """What a pod needs to reach the store: plain variables, and Secret keys."""

    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[SecretKey, ...] = ()


@dataclass(frozen=True)
class Scheme:
    """One kind of storage, as the registry knows it."""

    #: The URL scheme: ``s3`` serves ``s3://...``.
    name: str
    #: ``"module:Class"``: the ``Storage`` subclass, opened as ``Class(url, endpoint_url=...,
    #: max_attempts=...)`` (either may be None: the class's own default).
    storage: str
    #: How its URLs look, for messages: ``s3://bucket/prefix``.
    example: str
    #: Reached over the network: pods reach a run staged there themselves (a folder needs a
    #: shared PVC), and ``launcher collect`` is how a run there comes home.
    remote: bool = True
    #: The rule for the bucket of ``<name>://bucket/prefix`` (None: the URL has no bucket).
    bucket: re.Pattern[str] | None = None
    #: That rule in words, for messages.
    bucket_rule: str = ""
    #: The store's name in messages ("S3").
    title: str = ""
    #: The ``cluster:`` key of models.yaml that sets the store's endpoint (``s3_endpoint``).
    endpoint_setting: str | None = None
    #: The variable a pod gets that endpoint in (``AWS_ENDPOINT_URL``).
    endpoint_env: str | None = None
    #: The key of ``cluster.secrets`` naming the Secret a pod reads credentials from; the
    #: Secret is ``medbench-<secret>`` when models.yaml has no such key.
    secret: str | None = None
    #: ``(variable, key in the Secret)`` for each credential a pod reads from it.
    secret_keys: tuple[tuple[str, str], ...] = ()

    def handles(self, url: str) -> bool:
        return url.startswith(f"{self.name}://")

    # --- URLs ------------------------------------------------------------------------------

    def problem(self, url: str) -> str | None:
        """Why ``url`` (one of this scheme's) is no place for a run; None when it is."""
        if self.bucket is None:
            return None
        bucket, _, prefix = url[len(self.name) + 3:].partition("/")
        if not bucket:
            return f"missing bucket name; expected {self.example}"
        if not self.bucket.match(bucket) or ".." in bucket:
            return (f"{bucket!r} is not a bucket name {self.title or self.name} allows ({self.bucket_rule}); "
                    f"expected {self.example}")
        parts = prefix.rstrip("/").split("/") if prefix.rstrip("/") else []
        if any(p in ("", ".", "..") for p in parts):
            return "the prefix after the bucket must not contain empty, '.' or '..' parts"
        return None

    def split(self, url: str) -> tuple[str, str]:
        """``<name>://bucket/some/prefix/`` -> ``("bucket", "some/prefix")``; StorageURLError when bad."""
        check_url(url, "output")
        if not self.handles(url):
            raise StorageURLError(f"{url!r} is not a {self.name}:// URL")
        bucket, _, prefix = url[len(self.name) + 3:].partition("/")
        return bucket, prefix.strip("/")

    # --- opening -----------------------------------------------------------------------------

    def open(self, url: str, endpoint: str | None = None, *, max_attempts: int | None = None) -> Storage:
        module, _, name = self.storage.partition(":")
        cls = cast(Callable[..., Storage], getattr(importlib.import_module(module), name))
        return cls(url, endpoint_url=endpoint, max_attempts=max_attempts)

    # --- what models.yaml's cluster: section says of it ---------------------------------------

    def endpoint(self, cluster: object) -> str | None:
        """The endpoint ``cluster`` (models.yaml's ``cluster:`` section) sets for this store."""
        return getattr(cluster, self.endpoint_setting, None) if self.endpoint_setting else None

    def pod_access(self, cluster: object) -> PodAccess:
        """The variables and Secret keys a pod needs to reach this store.

        The Secret's keys are optional, since a workload identity (IAM roles for service
        accounts, GKE's) may stand in for them; a store at its own endpoint (MinIO, Ceph) has
        none, so there they are needed.
        """
        endpoint = self.endpoint(cluster)
        env = ((self.endpoint_env, endpoint),) if endpoint and self.endpoint_env else ()
        if not self.secret:
            return PodAccess(env)
        secret = getattr(getattr(cluster, "secrets", None), self.secret, None) or f"medbench-{self.secret}"
        needed = (f"the {self.title or self.name} endpoint {endpoint} takes keys (no workload identity there)"
                  if endpoint else "")
        keys = tuple(SecretKey(var, secret, key, needed=needed) for var, key in self.secret_keys)
        return PodAccess(env, keys)


#: A local folder: any output without ``://``.
FOLDER = Scheme(name="folder", storage="runner.storage.local:LocalStorage",
                example="a folder (such as results)", remote=False)

#: Every ``<name>://`` scheme, by name.
SCHEMES: dict[str, Scheme] = {
    "s3": Scheme(
        name="s3",
        storage="runner.storage.s3:S3Storage",
        example="s3://bucket/prefix",
        # Lower-case letters, digits, '.' and '-' (AWS's rule; MinIO and Ceph follow it). Upper
        # case and '_' are allowed by some old stores' "legacy" names, which boto3 refuses anyway.
        bucket=re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
        bucket_rule="3-63 lower-case letters, digits, '.' and '-'",
        title="S3",
        endpoint_setting="s3_endpoint",
        endpoint_env="AWS_ENDPOINT_URL",
        secret="s3",  # cluster.secrets.s3, default medbench-s3 (k8s/secrets.example.yaml)
        secret_keys=(("AWS_ACCESS_KEY_ID", "access-key-id"), ("AWS_SECRET_ACCESS_KEY", "secret-access-key")),
    ),
}


def expected_outputs() -> str:
    """Every kind of output there is, for messages: ``a folder (such as results) or s3://bucket/prefix``."""
    return " or ".join([FOLDER.example, *(s.example for s in SCHEMES.values())])


def scheme_of(url: str) -> Scheme:
    """The scheme serving ``url``; StorageURLError for a scheme no storage serves."""
    name, sep, _ = url.partition("://")
    if not sep:
        return FOLDER
    if name not in SCHEMES:
        raise StorageURLError(f"output {url!r}: {_unsupported(name)}")
    return SCHEMES[name]


def _unsupported(name: str) -> str:
    return f"unsupported scheme {name + '://'!r}; expected {expected_outputs()}"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be where a run lives, in words that do not repeat it; None when it can.

    The one rule for every output, wherever it comes from: models.yaml's ``output:``,
    ``launcher run --output``, ``status`` / ``collect --from``, the pods' ``MEDBENCH_OUTPUT``.
    """
    if not url.strip():  # "" would put the run straight into the folder the launcher runs in
        return f"must not be empty; expected {expected_outputs()}"
    if _CONTROL.search(url):
        return "must not contain control characters"
    name, sep, _ = url.partition("://")
    if sep and name not in SCHEMES:
        return _unsupported(name)
    return scheme_of(url).problem(url)


def check_url(url: str, what: str) -> str:
    """``url`` when it can hold a run; else StorageURLError (bad input, exit 2) naming ``what``
    (``output``, ``--output``, ``--from``)."""
    problem = url_problem(url)
    if problem:
        raise StorageURLError(f"{what} {url!r}: {problem}")
    return url


def open_storage(url: str, *, endpoint_url: str | None = None, max_attempts: int | None = None) -> Storage:
    """The Storage for ``url``, checked first. ``endpoint_url``: the store's endpoint (None: its
    default); ``max_attempts``: tries per request where the store retries (None: its default)."""
    check_url(url, "output")
    return scheme_of(url).open(url, endpoint_url, max_attempts=max_attempts)
