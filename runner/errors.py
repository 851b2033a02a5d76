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

import stat
from pathlib import Path
from typing import Any

from runner.redact import redact

#: One megabyte, in the size limits of files medbench reads.
MB = 10**6


def install_hint(extra: str) -> str:
    """How to add an extra: medbench is not on a package index, it installs from its checkout."""
    return f"pip install -e '.[{extra}]' in the medbench checkout"


class MedbenchError(Exception):
    exit_code = 1


class InputError(MedbenchError):
    exit_code = 2

    @classmethod
    def read_text(cls, path: Path, *, missing: str, folder: str, limit: int = 10 * MB,
                  what: str = "this file") -> str:
        """The text of a file the user named, or this error: one line that starts with the path.

        Only a regular file (or a link to one) is read: a device such as /dev/zero never ends
        and a named pipe blocks until someone writes to it. At most ``limit`` bytes are read;
        ``what`` names the file in the message that says so ("a questions file").
        """
        try:
            st = path.stat()
        except FileNotFoundError:  # a dangling link too
            raise cls(f"{path}: {missing}") from None
        except OSError as e:
            raise cls(f"{path}: cannot read: {e.strerror or e}") from None
        if stat.S_ISDIR(st.st_mode):
            raise cls(f"{path}: is a folder; {folder}")
        if not stat.S_ISREG(st.st_mode):
            raise cls(f"{path}: is {_file_kind(st.st_mode)}, not a regular file; {folder}")
        too_big = f"{path}: larger than {limit / MB:,.0f} MB, the most read for {what}"
        if st.st_size > limit:
            raise cls(too_big)
        try:
            with path.open("rb") as f:
                data = f.read(limit + 1)  # st_size can lie (/proc) or the file can grow meanwhile
        except OSError as e:
            raise cls(f"{path}: cannot read: {e.strerror or e}") from None
        if len(data) > limit:
            raise cls(too_big)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise cls(f"{path}: cannot read: {e}") from None


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


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
