"""Results across runs: every answer of any number of runs as one tidy table, from Python or the CLI.

    from launcher.results import samples_df, runs_df
    df = samples_df(["results/", "s3://medbench/runs"])      # pandas: one row per run x model x question
    runs = runs_df(["results/"])                               # one row per run x model

``samples_table`` / ``runs_table`` return pyarrow Tables instead (no pandas needed). A path is
a run (a folder, ``s3://bucket/prefix/run-id``) or a place holding runs; an S3 prefix is
listed once. Each run's tables are kept in the launcher's cache and rebuilt only when the run
changed (``launcher.results.store``). A run that cannot be read (half written, damaged) is
skipped: ``on_skip(url, why)`` hears of it (the CLI prints one line). The columns are in
``launcher.results.schema`` and docs/results.md.

Importing this package costs nothing: pyarrow (and pandas, for the ``_df`` functions) are
imported when a table is made; without them the error names the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Results:
    """The runs a list of paths named, each with its tables (cached or rebuilt), and those skipped."""

    tables: list[Any] = field(default_factory=list)  # launcher.results.store.RunTables
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (url, why)
    notes: list[str] = field(default_factory=list)

    @property
    def rebuilt(self) -> int:
        return sum(1 for t in self.tables if t.rebuilt)

    def fingerprint(self) -> str:
        """Changes when any run's tables, or the set of runs, changed."""
        import hashlib

        from launcher.results.store import code_hash

        h = hashlib.sha256()
        for t in self.tables:
            h.update(f"{t.ref.url}\t{t.ref.fingerprint(code_hash())}\n".encode())
        return h.hexdigest()[:32]

    def samples(self, columns: list[str] | None = None) -> Any:
        """Every run's samples as one pyarrow Table (only ``columns``, when given)."""
        from launcher.results.schema import SAMPLES, arrow_schema, require

        pa = require("pyarrow")
        schema = arrow_schema(SAMPLES)
        if columns:
            schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
        parts = [t.samples(columns) for t in self.tables]
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def runs(self) -> Any:
        from launcher.results.schema import RUNS, arrow_schema, require

        pa = require("pyarrow")
        parts = [t.runs() for t in self.tables]
        return pa.concat_tables(parts) if parts else arrow_schema(RUNS).empty_table()


def load(paths: list[str] | str, *, endpoint: str | None = None, cache: Path | None = None,
         on_skip: Callable[[str, str], None] | None = None,
         on_note: Callable[[str], None] | None = None) -> Results:
    """Find the runs ``paths`` name and make sure each one's tables are current.

    ``InputError`` (exit 2) when a path names no run. ``endpoint``: the S3 endpoint (default
    ``$AWS_ENDPOINT_URL_S3`` / ``$AWS_ENDPOINT_URL``); ``cache``: where the per-run tables are
    kept (default the launcher's cache folder).
    """
    from launcher.results.reading import UnreadableRun
    from launcher.results.schema import require
    from launcher.results.sources import find_runs
    from launcher.results.store import RunStore

    require("pyarrow")
    refs = find_runs([paths] if isinstance(paths, str) else list(paths), endpoint=endpoint)
    store = RunStore(cache)
    out = Results()
    found: list[Any] = [store.cached(ref) for ref in refs]
    todo = [i for i, tables in enumerate(found) if tables is None]
    built = dict(zip(todo, store.build_all([refs[i] for i in todo], notes=on_note), strict=True))
    for i, ref in enumerate(refs):
        tables = found[i] if found[i] is not None else built[i]
        if isinstance(tables, UnreadableRun):
            out.skipped.append((ref.url, str(tables)))
            if on_skip:
                on_skip(ref.url, str(tables))
            continue
        out.tables.append(tables)
    if store.note:
        out.notes.append(store.note)
        if on_note:
            on_note(store.note)
    return out


def samples_table(paths: list[str] | str, **kw: Any) -> Any:
    """Every answer of the runs ``paths`` name: a pyarrow Table, one row per run x model x question."""
    return load(paths, **kw).samples()


def runs_table(paths: list[str] | str, **kw: Any) -> Any:
    """One row per run x model: a pyarrow Table."""
    return load(paths, **kw).runs()


def samples_df(paths: list[str] | str, **kw: Any) -> Any:
    """``samples_table`` as a pandas DataFrame."""
    return _pandas(samples_table(paths, **kw))


def runs_df(paths: list[str] | str, **kw: Any) -> Any:
    """``runs_table`` as a pandas DataFrame."""
    return _pandas(runs_table(paths, **kw))


def _pandas(table: Any) -> Any:
    from launcher.results.schema import require

    require("pandas")
    return table.to_pandas()


__all__ = ["Results", "load", "runs_df", "runs_table", "samples_df", "samples_table"]
