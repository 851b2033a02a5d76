"""Where a run lives: a local folder or S3-compatible object storage, chosen by URL scheme.

One small interface over keys (relative POSIX paths such as ``run-id/model/1.txt``), so the
runner, ``collect`` and ``status`` are written once and behave the same on both.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from runner.errors import StorageError, StorageNotFound


class Storage(ABC):
    """A flat key space. Writes of one key are atomic: a reader sees all of it or nothing."""

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

    def download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, self.read_bytes(key))

    def size_and_etag(self, key: str) -> tuple[int, str | None]:
        """Size in bytes and, where the store has one, an MD5-like tag (for collect)."""
        return len(self.read_bytes(key)), None

    def join(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in parts if p)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStorage(Storage):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p == ".." for p in parts):
            raise StorageError(f"refusing key with '..': {key}")
        return self.root.joinpath(*parts)

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            _atomic_write(self._path(key), data)
        except OSError as e:
            raise StorageError(f"cannot write {self._path(key)}: {e.strerror or e}") from e

    def read_bytes(self, key: str) -> bytes:
        p = self._path(key)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise StorageNotFound(f"{p}: not found") from None
        except OSError as e:
            raise StorageError(f"cannot read {p}: {e.strerror or e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix.strip("/")]
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if f.startswith(".") and f.endswith(".tmp"):
                    continue  # a write in progress
                full = Path(dirpath) / f
                out.append(full.relative_to(self.root).as_posix())
        return sorted(out)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def upload_file(self, key: str, path: Path) -> None:
        self.write_bytes(key, Path(path).read_bytes())


def is_s3(url: str) -> bool:
    return url.startswith("s3://")


def open_storage(url: str, *, endpoint_url: str | None = None) -> Storage:
    """A Storage for a local folder or ``s3://bucket/prefix``."""
    if is_s3(url):
        from runner.storage_s3 import S3Storage

        return S3Storage(url, endpoint_url=endpoint_url)
    if "://" in url:
        raise StorageError(f"output {url!r}: unsupported scheme; use a local folder or s3://bucket/prefix")
    return LocalStorage(url)
