"""One error hierarchy for medbench, rendered once at the CLI edge (``launcher.cli``,
``runner.main``) as one line and a fixed exit code.

    MedbenchError                 exit 1 unless a subclass says otherwise
    ├── InputError                exit 2: bad config, questions or arguments; nothing written
    │   ├── ConfigError
    │   └── QuestionsError
    ├── BackendUnavailable        a backend's library or credentials are missing (exit 2)
    ├── BackendFatal              the service refused us for good (bad key, quota): stops a model
    ├── APICallError              one attempt at one question failed (the engine retries or records it)
    │   ├── TransientAPIError     429, 5xx, timeout, connection, malformed body: worth retrying
    │   └── PermanentAPIError     a refusal that retrying cannot change (a 400)
    ├── OutOfMemory               a batch did not fit; the engine halves the batch or records it
    ├── StorageError              object storage or the local folder failed
    │   ├── StorageNotFound       the key does not exist
    │   └── StorageURLError       an output no storage can serve (gs://x, s3:///x): exit 2
    ├── LeaseHeld                 another process runs this model now (exit 1; --wait waits)
    ├── LeaseLost                 our lease was taken over: this process stops writing
    └── ClusterError              the Kubernetes API failed or refused

Each library's own exceptions become one of these at one choke point per library: the S3
client (``runner.storage.s3``), the Kubernetes client (``launcher.k8s.client``), each API
backend's ``wrap_error``, torch's out-of-memory in the local backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.redact import redact


class MedbenchError(Exception):
    exit_code = 1


class InputError(MedbenchError):
    exit_code = 2

    @classmethod
    def read_text(cls, path: Path, *, missing: str, folder: str) -> str:
        """The text of a file the user named; a missing, folder, unreadable or non-UTF-8 path is
        this error, one line that starts with the path."""
        if not path.exists():
            raise cls(f"{path}: {missing}")
        if path.is_dir():
            raise cls(f"{path}: is a folder; {folder}")
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise cls(f"{path}: cannot read: {e}") from None


class ConfigError(InputError):
    pass


class QuestionsError(InputError):
    pass


class BackendUnavailable(MedbenchError):
    exit_code = 2


class BackendFatal(MedbenchError):
    """The service will not answer this model at all (rejected key, exhausted quota)."""


class APICallError(MedbenchError):
    """One attempt at one question failed; the engine turns it into a retry or a record."""


class TransientAPIError(APICallError):
    """Worth retrying: the service was busy, slow, or answered garbage.

    ``kind`` is rate_limit, server, timeout, connection or malformed; ``retry_after`` the
    seconds the server asked us to wait, when it said. The message must already be free of
    secrets: it is redacted here, since servers echo what they were sent.
    """

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None):
        super().__init__(redact(message))
        self.kind = kind
        self.retry_after = retry_after

    @property
    def rate_limited(self) -> bool:
        return self.kind == "rate_limit"


class PermanentAPIError(APICallError):
    """Retrying would get the same refusal (a bad request for this question)."""

    def __init__(self, message: str):
        super().__init__(redact(message))


class OutOfMemory(MedbenchError):
    """A batch did not fit in memory; raised by a backend, handled by the engine's batching."""


class StorageError(MedbenchError):
    pass


class StorageNotFound(StorageError):
    pass


class StorageURLError(InputError, StorageError):
    """An output URL no storage can serve (``gs://x``, ``s3:///x``): bad input, exit 2."""


class LeaseHeld(MedbenchError):
    """Someone else runs this now. Exit 1: not bad input, and the same command works later."""

    def __init__(self, message: str, *, key: str, owner: Any = None):
        super().__init__(message)
        self.key, self.owner = key, owner


class LeaseLost(MedbenchError):
    """Our lease was taken over (we could not renew it in time): this process must stop."""


class ClusterError(MedbenchError):
    pass
