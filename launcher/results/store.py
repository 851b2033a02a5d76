"""Each run's tables kept as Parquet in the launcher's cache, rebuilt only when the run changed.

``<cache>/results/<key>.samples.parquet`` and ``<key>.runs.parquet`` per run, where ``key``
is a digest of the run's location (folder or ``s3://`` URL). Both files carry the run's
fingerprint (``launcher.results.sources``: its listed files, their sizes and tags, and the
code that builds the tables) in their metadata; a run whose fingerprint matches is read back,
any other is read from storage and rebuilt. Writes go to a temporary name and are renamed,
so an interrupted export leaves each run's files whole or absent. A cache folder that cannot
be written is not an error: the tables are then kept in memory for this command only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from launcher.cache import cache_dir
from launcher.results import reading, schema, sources, tidy
from launcher.results.reading import read_run
from launcher.results.schema import require
from launcher.results.sources import RunRef
from launcher.scoring import extract
from runner.storage.base import temp_beside

FINGERPRINT = b"medbench.fingerprint"
CACHE_SUBDIR = "results"


@cache
def code_hash() -> str:
    """The code the tables are made by: any change to it rebuilds every run's tables."""
    h = hashlib.sha256()
    for module in (sources, reading, tidy, schema, extract):
        h.update(Path(module.__file__ or "").read_bytes())
    return h.hexdigest()[:16]


@dataclass
class RunTables:
    """One run's two tables: on disk in the cache, or in memory when the cache cannot be written."""

    ref: RunRef
    samples_path: Path | None = None
    runs_path: Path | None = None
    samples_table: Any = None
    runs_table: Any = None
    rebuilt: bool = False

    def samples(self, columns: list[str] | None = None) -> Any:
        if self.samples_table is not None:
            return self.samples_table.select(columns) if columns else self.samples_table
        pq = require("pyarrow.parquet")
        return pq.read_table(self.samples_path, columns=columns)

    def runs(self) -> Any:
        if self.runs_table is not None:
            return self.runs_table
        pq = require("pyarrow.parquet")
        return pq.read_table(self.runs_path)


class RunStore:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / CACHE_SUBDIR
        self.note: str | None = None  # why the cache could not be written, once

    def _paths(self, ref: RunRef) -> tuple[Path, Path]:
        key = hashlib.sha256(ref.url.encode("utf-8")).hexdigest()[:24]
        return self.root / f"{key}.samples.parquet", self.root / f"{key}.runs.parquet"

    def cached(self, ref: RunRef) -> RunTables | None:
        """The run's tables when the cache holds them for its current fingerprint."""
        pq = require("pyarrow.parquet")
        fingerprint = ref.fingerprint(code_hash()).encode()
        samples, runs = self._paths(ref)
        try:
            for path in (runs, samples):
                if (pq.read_schema(path).metadata or {}).get(FINGERPRINT) != fingerprint:
                    return None
        except (OSError, ValueError):  # missing, or not Parquet (pyarrow's ArrowInvalid is a ValueError)
            return None
        return RunTables(ref, samples, runs)

    def build(self, ref: RunRef, notes: Callable[[str], None] | None = None) -> RunTables:
        """Read the run from storage and make its tables (``reading.UnreadableRun`` when it cannot
        be read); kept in the cache when it can be written."""
        fingerprint = ref.fingerprint(code_hash())  # before reading: a change meanwhile rebuilds next time
        content = read_run(ref)
        samples, runs = tidy.build_tables(content)
        for note in content.notes:
            if notes:
                notes(f"{ref.url}: {note}")
        samples_path, runs_path = self._paths(ref)
        try:
            self._write(samples_path, samples, fingerprint)
            self._write(runs_path, runs, fingerprint)
        except OSError as e:
            self.note = self.note or (f"results cache {self.root} not written ({e.strerror or e}): "
                                      "tables kept in memory")
            return RunTables(ref, samples_table=samples, runs_table=runs, rebuilt=True)
        return RunTables(ref, samples_path, runs_path, rebuilt=True)

    @staticmethod
    def _write(path: Path, table: Any, fingerprint: str) -> None:
        pq = require("pyarrow.parquet")
        meta = {**(table.schema.metadata or {}), FINGERPRINT: fingerprint.encode()}
        fd, tmp = temp_beside(path)
        os.close(fd)
        try:
            pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
