"""A run in a local folder: keys are paths under the root, each write atomic (temp file + rename)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from runner.errors import StorageError, StorageNotFound, StorageURLError
from runner.storage.base import Storage, atomic_write, content_version

try:
    import fcntl
except ImportError:  # Windows: conditional writes fall back to check-then-write
    fcntl = None  # type: ignore[assignment]


class LocalStorage(Storage):
    def __init__(self, root: str | Path, *, endpoint_url: str | None = None, max_attempts: int | None = None):
        """A folder has no endpoint and no retries: ``endpoint_url`` and ``max_attempts`` (the
        arguments every scheme's class takes) are ignored."""
        self.root = Path(root).expanduser()
        self.url = str(self.root)
        # The user's mistake, said before anything is written, not a failed write (exit 1) later.
        if self.root.exists() and not self.root.is_dir():
            raise StorageURLError(f"output {self.url}: is a file; expected a folder")
        for parent in self.root.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise StorageURLError(f"output {self.url}: {parent} is a file; expected a folder")
                break

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

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def list_info(self, prefix: str = "") -> dict[str, tuple[int, str | None]]:
        return {key: (self._path(key).stat().st_size, None) for key in self.list(prefix)}

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

    # --- conditional writes: serialised by a lock on the key's folder ----------------------

    @contextlib.contextmanager
    def _folder_locked(self, path: Path) -> Iterator[None]:
        """Hold an exclusive lock on ``path``'s folder while a conditional write checks and writes.

        flock on the folder itself, so no lock file is left beside the results. Where the
        filesystem cannot lock a folder (some NFS set-ups), the check and the write are not
        atomic; the lease module's read-back check is what catches a lost race there.
        """
        folder = path.parent
        fd = None
        for _ in range(10):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if fcntl is None:
                    break
                fd = os.open(folder, os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX)
                # Another process may have removed the folder (emptied by delete_versioned)
                # between our mkdir and the lock: then the lock is on a dead folder; retry.
                if os.stat(folder).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            except OSError as e:
                if fd is None and not folder.is_dir():
                    raise StorageError(f"cannot write {folder}: {e.strerror or e}") from e
                # The filesystem cannot lock a folder: go on unlocked (see above).
                if fd is not None:
                    os.close(fd)
                fd = None
                break
            if fd is not None:
                os.close(fd)
                fd = None
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # closing drops the lock

    def create_new(self, key: str, data: bytes) -> str | None:
        p = self._path(key)
        with self._folder_locked(p):
            if p.exists():  # a folder in the way counts as taken, too
                return None
            self.write_bytes(key, data)
        return content_version(data)

    # The base class's check-then-write, made atomic between processes by the folder's lock.

    def replace_versioned(self, key: str, data: bytes, version: str) -> str | None:
        with self._folder_locked(self._path(key)):
            return super().replace_versioned(key, data, version)

    def delete_versioned(self, key: str, version: str) -> bool:
        p = self._path(key)
        with self._folder_locked(p):
            if not super().delete_versioned(key, version):
                return False
            with contextlib.suppress(OSError):
                p.parent.rmdir()  # a folder of leases goes once the last one is released
        return True
