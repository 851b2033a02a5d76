"""A run in a local folder: keys are paths under the root, each write atomic (temp file + rename)."""

from __future__ import annotations

import os
from pathlib import Path

from runner.errors import StorageError, StorageNotFound
from runner.storage.base import Storage, atomic_write


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
            atomic_write(self._path(key), data)
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
