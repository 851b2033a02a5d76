"""The storage interface: a flat key space, implemented by ``local``, ``s3`` and any scheme of
``runner.storage.schemes``."""

from __future__ import annotations

import hashlib
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.errors import StorageNotFound
from runner.storage.etag import file_md5


class Storage(ABC):
    """A flat key space. Writes of one key are atomic: a reader sees all of it or nothing.

    A scheme's class is opened as ``Class(url, endpoint_url=..., max_attempts=...)``
    (``runner.storage.schemes``); a store without an endpoint or retries takes and ignores them.
    """

    url: str

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Raises StorageNotFound when the key does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (recursively), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def upload_file(self, key: str, path: Path) -> None:
        self.write_bytes(key, Path(path).read_bytes())

    def download_file(self, key: str, path: Path, *,
                      size: int | None = None, etag: str | None = None) -> None:
        """Copy ``key`` to the local ``path``, whole or not at all.

        ``size`` and ``etag`` are what a listing said of the key; a store whose copies cross a
        network (S3) checks the download against them. A local folder's copy has nothing to
        cross, and its listing no tag.
        """
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(Path(path), self.read_bytes(key))

    def size_and_etag(self, key: str) -> tuple[int, str | None]:
        """Size in bytes and, where the store has one, an MD5-like tag (for collect)."""
        return len(self.read_bytes(key)), None

    def list_info(self, prefix: str = "") -> dict[str, tuple[int, str | None]]:
        """Every key under ``prefix`` with its size and tag (``size_and_etag``), for collect.

        One lookup a key here; a store whose listing carries both (S3) overrides it with one
        listing.
        """
        return {key: self.size_and_etag(key) for key in self.list(prefix)}

    def local_path(self, key: str) -> Path | None:
        """Where ``key`` lies on this machine's disk, for a store that is a folder; else None."""
        return None

    def matches_file(self, key: str, path: Path, size: int, etag: str | None) -> bool:
        """True when the local file ``path`` already holds exactly what ``key`` holds, judged
        from what a listing said of the key (``size``, ``etag``) without downloading it: collect
        then skips it. A folder compares the two files; a store with tags overrides this.
        """
        if not path.is_file() or path.stat().st_size != size:
            return False
        here = self.local_path(key)
        return here is not None and file_md5(here) == file_md5(path)

    # --- conditional writes, for leases (runner.storage.lease) -----------------------------
    #
    # A version is an opaque tag of one content of a key (S3's ETag, a digest locally). These
    # defaults check, then write: correct for one writer only. The local and S3 stores
    # override them with writes that are conditional in the store itself.

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The content of ``key`` and its version; StorageNotFound when absent."""
        data = self.read_bytes(key)
        return data, content_version(data)

    def create_new(self, key: str, data: bytes) -> str | None:
        """Write ``key`` only if it does not exist: its new version, or None when it existed."""
        if self.exists(key):
            return None
        self.write_bytes(key, data)
        return content_version(data)

    def replace_versioned(self, key: str, data: bytes, version: str) -> str | None:
        """Write ``key`` only if it still holds ``version``: the new version, or None when it
        changed or vanished meanwhile."""
        try:
            _, current = self.read_versioned(key)
        except StorageNotFound:
            return None
        if current != version:
            return None
        self.write_bytes(key, data)
        return content_version(data)

    def delete_versioned(self, key: str, version: str) -> bool:
        """Delete ``key`` only if it still holds ``version``; False when it changed.

        Check, then delete, on every store (DeleteObject's If-Match is not supported by every S3
        store): a lease taken over in between is re-created by its new holder at its next renewal.
        """
        try:
            _, current = self.read_versioned(key)
        except StorageNotFound:
            return False
        if current != version:
            return False
        self.delete(key)
        return True


def content_version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_TEMP_STEM = 200


def temp_beside(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file in ``path``'s folder, opened for writing: ``(fd, its path)``.

    Unlike ``tempfile.mkstemp`` (always 0600), the file gets the process's umask like any
    other file it creates, so a results folder shared through group permissions stays
    readable by the group once the file is renamed into place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    # The temporary name adds 18 bytes: a long name is shortened so that it still fits the
    # 255 bytes a file name may have wherever the name itself fits.
    stem = os.fsencode(path.name)[:_TEMP_STEM].decode("utf-8", "ignore")
    for _ in range(100):
        tmp = path.parent / f".{stem}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write, by name, with any library.

    When the block ends without an exception the file replaces ``path`` in one rename; when it
    raises, the file is removed and ``path`` left as it was. A reader sees the old file or the
    new one, never half of one. The one temp-file-then-rename of medbench: every whole-file
    write goes through it (``atomic_write``, downloads, the report's files, Parquet tables).
    """
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all, on disk before the rename."""
    with replacing(path) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
