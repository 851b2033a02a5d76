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
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from launcher.cache import cache_dir
from launcher.results import reading, schema, sources, tidy
from launcher.results.reading import UnreadableRun, read_run
from launcher.results.schema import require
from launcher.results.sources import RunRef
from launcher.scoring import extract
from runner.storage import open_storage, replacing

FINGERPRINT = b"medbench.fingerprint"
CACHE_SUBDIR = "results"
#: Runs in S3 read at the same time (each also reads its models' files in parallel, see
#: ``reading.MODELS_AT_ONCE``): their time is spent waiting on requests.
REMOTE_RUNS_AT_ONCE = 4
#: Local runs are built in worker processes, one per CPU, when at least this much of answers is
#: to be read: grading free-text answers is CPU work. Below it, starting the workers costs more.
PARALLEL_ABOVE_BYTES = 16 * 1024 * 1024


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
        return _read(self.samples_path, columns)

    def runs(self) -> Any:
        if self.runs_table is not None:
            return self.runs_table
        return _read(self.runs_path, None)


def _build_local(root: str, parent: str, run_id: str, files: dict) -> tuple[RunTables | str, list[str]]:
    """``RunStore.build`` of one local run, in a worker process: (its tables, or why it cannot be
    read; the notes it made)."""
    said: list[str] = []
    try:
        ref = RunRef(open_storage(parent), run_id, files)
        return RunStore(Path(root)).build(ref, notes=said.append), said
    except UnreadableRun as e:
        return str(e), said


def _read(path: Path | None, columns: list[str] | None) -> Any:
    # ParquetFile, not read_table: read_table goes through pyarrow.dataset, which imports pandas (0.7 s).
    pq = require("pyarrow.parquet")
    return pq.ParquetFile(path).read(columns=columns)


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

    def build_all(self, refs: list[RunRef], notes: Callable[[str], None] | None = None
                  ) -> list[RunTables | UnreadableRun]:
        """``build`` for each run, in order; a run that cannot be read gives its ``UnreadableRun``."""
        out: dict[int, RunTables | UnreadableRun] = {}

        def one(i: int) -> RunTables | UnreadableRun:
            try:
                return self.build(refs[i], notes=notes)
            except UnreadableRun as e:
                return e

        remote = [i for i, ref in enumerate(refs) if ref.local is None]
        local = [i for i, ref in enumerate(refs) if ref.local is not None]
        if remote:
            with ThreadPoolExecutor(max_workers=REMOTE_RUNS_AT_ONCE, thread_name_prefix="read-runs") as pool:
                out.update(zip(remote, pool.map(one, remote), strict=True))
        size = sum(e[0] for i in local for k, e in refs[i].files.items() if k.endswith("responses.jsonl"))
        workers = min(os.cpu_count() or 1, len(local))
        if workers > 1 and size >= PARALLEL_ABOVE_BYTES:
            out.update(self._in_processes([refs[i] for i in local], local, workers, notes))
        else:
            out.update((i, one(i)) for i in local)
        return [out[i] for i in range(len(refs))]

    def _in_processes(self, refs: list[RunRef], at: list[int], workers: int,
                      notes: Callable[[str], None] | None) -> dict[int, RunTables | UnreadableRun]:
        out: dict[int, RunTables | UnreadableRun] = {}
        # spawn, not fork: this process may hold threads (boto3's, pyarrow's) a fork would copy mid-step.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
            jobs = [pool.submit(_build_local, str(self.root), str(ref.storage.url), ref.run_id, ref.files)
                    for ref in refs]
            for i, ref, job in zip(at, refs, jobs, strict=True):
                result, said = job.result()
                for line in said:
                    if notes:
                        notes(line)
                if isinstance(result, str):
                    out[i] = UnreadableRun(result)
                    continue
                result.ref = ref
                if result.samples_table is not None:
                    self.note = self.note or f"results cache {self.root} not written: tables kept in memory"
                out[i] = result
        return out

    @staticmethod
    def _write(path: Path, table: Any, fingerprint: str) -> None:
        pq = require("pyarrow.parquet")
        meta = {**(table.schema.metadata or {}), FINGERPRINT: fingerprint.encode()}
        with replacing(path) as tmp:
            pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
