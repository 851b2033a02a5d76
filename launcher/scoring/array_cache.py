"""What the report computes per text, kept in the run folder so the next report reuses it.

Embeddings of answers and references, and ROUGE-L scores of answer/reference pairs, cost
seconds to minutes and depend only on the text and on what computed them. They are kept
under ``<run>/.cache/<kind>/<name>-<hash>/``, where the hash is that of an *identity* (for an
encoder: its id, settings and a fingerprint of its weights files), so a value is never read
back for another encoder, another setting or other weights. Each value is keyed by the
SHA-256 of its text (of both texts, for a pair), so an answer that changed is computed again
and an unchanged one is not.

A folder holds ``identity.json`` (what the hash stands for, for people and as a check) and
shards ``*.npz``: ``keys`` (n, 32) uint8 digests, ``values`` (n, width). Each batch of new
values is one new shard, written to a temporary name and renamed, so two reports running at
once never write the same file, and a reader never sees half a shard. A shard that cannot be
read (removed by another report's merge, or damaged) is skipped: its values are computed
again. Past ``MAX_SHARDS`` the writer merges everything it read or wrote into one shard and
deletes those it merged (never a shard another report is writing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# One file format for vectors keyed by text, here and in a run (runner.artefacts.stored).
from runner.artefacts.stored import identity_hash, pack_text_vectors, unpack_text_vectors
from runner.artefacts.stored import text_key as text_key
from runner.storage import atomic_write as atomic_write

CACHE_DIR = ".cache"
MAX_SHARDS = 16
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


def pair_key(a: bytes, b: bytes) -> bytes:
    """The key of an ordered pair of texts, from their own keys."""
    return hashlib.sha256(a + b).digest()


class ArrayCache:
    """Rows of floats keyed by 32-byte digests, for one identity, in one folder.

    ``note`` says why the cache could not be written (a read-only run folder, a full disk);
    the report goes on without it.
    """

    def __init__(self, run_dir: Path, kind: str, name: str, identity: dict[str, Any],
                 dtype: type = np.float32):
        self.identity = identity
        self.hash = identity_hash(identity)
        slug = _SLUG.sub("-", name).strip("-")[:60] or kind
        self.folder = Path(run_dir) / CACHE_DIR / kind / f"{slug}-{self.hash}"
        self.dtype = np.dtype(dtype)
        self.note: str | None = None
        self._index: dict[bytes, int] | None = None
        self._values: np.ndarray | None = None
        self._shards: list[Path] = []

    # --- reading ---------------------------------------------------------------------------

    def _identity_matches(self) -> bool:
        try:
            stored = json.loads((self.folder / "identity.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return stored == self.identity

    def _load(self) -> None:
        if self._index is not None:
            return
        self._index = {}
        parts: list[np.ndarray] = []
        if not self.folder.is_dir() or not self._identity_matches():
            return
        width = None
        for path in sorted(self.folder.glob("*.npz")):
            shard = unpack_text_vectors(path, self.hash, self.dtype)  # None: merged away or damaged
            if shard is None:
                continue
            keys, values = shard
            if width is None:
                width = values.shape[1]
            if values.shape[1] != width:
                continue  # cannot come from this identity; ignore rather than trust
            offset = sum(len(p) for p in parts)
            for i, k in enumerate(keys):
                self._index[k] = offset + i
            parts.append(values)
            self._shards.append(path)
        if parts:
            self._values = np.concatenate(parts) if len(parts) > 1 else parts[0]

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The stored row of every key that has one."""
        self._load()
        index, values = self._index, self._values
        assert index is not None
        found: dict[bytes, np.ndarray] = {}
        if values is None:
            return found  # nothing stored: the index is empty too
        for k in keys:
            row = index.get(k)
            if row is not None:
                found[k] = values[row]
        return found

    # --- writing ---------------------------------------------------------------------------

    def put(self, keys: Sequence[bytes], values: np.ndarray) -> None:
        """Store new rows as one shard; merge the folder when it holds too many shards."""
        if not len(keys):
            return
        self._load()
        index = self._index
        assert index is not None
        values = np.asarray(values, dtype=self.dtype).reshape(len(keys), -1)
        new_keys = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ident = self.folder / "identity.json"
            if not self._identity_matches():
                atomic_write(ident, (json.dumps(self.identity, indent=2, sort_keys=True) + "\n").encode())
            merged = self._values if len(self._shards) + 1 > MAX_SHARDS else None
            if merged is not None:
                old_keys = _keys_array(index)
                new_keys = np.concatenate([old_keys, new_keys])
                values = np.concatenate([merged[_rows(index)], values])
            path = self.folder / _shard_name()
            atomic_write(path, pack_text_vectors(new_keys, values, self.hash))
            if merged is not None:
                for old in self._shards:
                    old.unlink(missing_ok=True)
                index, self._values, self._shards = {}, None, []
                self._index = index
        except OSError as e:
            self.note = f"cache {self.folder} not written: {e.strerror or e}"
            return
        # What this report wrote counts as read: a later put may merge it.
        raw = new_keys.tobytes()
        offset = 0 if self._values is None else len(self._values)
        for i in range(len(new_keys)):
            index[raw[32 * i : 32 * i + 32]] = offset + i
        self._values = values if self._values is None else np.concatenate([self._values, values])
        self._shards.append(path)


def _shard_name() -> str:
    # Time first, so shards sort by age; pid and random bytes keep two writers apart.
    return f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}.npz"


def _keys_array(index: dict[bytes, int]) -> np.ndarray:
    items = sorted(index.items(), key=lambda kv: kv[1])
    return np.frombuffer(b"".join(k for k, _ in items), dtype=np.uint8).reshape(len(items), 32)


def _rows(index: dict[bytes, int]) -> list[int]:
    return sorted(index.values())
