"""``launcher export RUN... -o FILE.parquet``: every answer of any number of runs as one Parquet table.

Writes ``FILE.parquet`` (one row per run x model x question) and ``FILE.runs.parquet`` (one row
per run x model), both in the schema of ``launcher.results.schema`` (docs/results.md). Each
run's tables come from the launcher's cache when the run has not changed since they were
made; only changed runs are read from storage again. A run that cannot be read is skipped with
one line; the others are exported.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from runner.errors import InputError, StorageError
from runner.storage import replacing

err = Console(stderr=True, highlight=False, soft_wrap=True)


def register(sub) -> None:
    p = sub.add_parser("export", help="every answer of one or more runs as one Parquet table (local or S3)")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_PREFIX",
                   help="a run (folder or s3://bucket/prefix/run-id) or a place holding runs "
                        "(results/, s3://bucket/prefix)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.parquet",
                   help="the samples table; the runs table goes beside it as FILE.runs.parquet")
    add_source_options(p)
    p.set_defaults(func=cmd_export)


def add_source_options(p) -> None:
    """--endpoint and --cache, shared with ``launcher compare``."""
    p.add_argument("--endpoint", metavar="URL",
                   help="S3 endpoint (MinIO, Ceph); default $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL")
    p.add_argument("--cache", metavar="DIR",
                   help="where each run's tables are kept between commands (default: the launcher's cache "
                        "folder, results/)")


def load_runs(args) -> Any:
    """The runs ``args.paths`` name, each one's tables current; skipped runs told on stderr."""
    from launcher.results import load

    def skipped(url: str, why: str) -> None:
        err.print(Text(f"warning: skipped {url}: {why}"))

    def note(text: str) -> None:
        err.print(Text(f"note: {text}"))

    cache = Path(args.cache).expanduser() if args.cache else None
    results = load(args.paths, endpoint=args.endpoint, cache=cache, on_skip=skipped, on_note=note)
    if not results.tables:
        raise InputError(f"no readable run in {', '.join(args.paths)}: nothing to "
                         f"{args.command} (each was skipped, see above)")
    return results


def runs_path(output: Path) -> Path:
    stem = output.name[: -len(".parquet")] if output.name.endswith(".parquet") else output.name
    return output.with_name(f"{stem}.runs.parquet")


def _check_output(output: Path) -> None:
    for path in (output, runs_path(output)):
        if path.is_dir():
            raise InputError(f"-o {output}: {path} is a folder; give a file name such as results.parquet")


def _current(path: Path, fingerprint: str) -> bool:
    """The file was written from these very runs (nothing changed since)."""
    from launcher.results.schema import require
    from launcher.results.store import FINGERPRINT

    pq = require("pyarrow.parquet")
    try:
        return (pq.read_schema(path).metadata or {}).get(FINGERPRINT) == fingerprint.encode()
    except (OSError, ValueError):
        return False


def _write(path: Path, tables: Iterable[Any], schema: Any, fingerprint: str) -> int:
    """Stream the tables into one Parquet file, whole or not at all; the rows written."""
    from launcher.results.schema import require
    from launcher.results.store import FINGERPRINT

    pq = require("pyarrow.parquet")
    schema = schema.with_metadata({**(schema.metadata or {}), FINGERPRINT: fingerprint.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with replacing(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for table in tables:
            writer.write_table(table.cast(schema))
            rows += table.num_rows
    return rows


def cmd_export(args) -> int:
    from launcher.results.schema import RUNS, SAMPLES, arrow_schema

    output = Path(args.output).expanduser()
    _check_output(output)
    results = load_runs(args)
    console = Console(highlight=False)
    runs = results.runs()
    fingerprint = results.fingerprint()
    unchanged = _current(output, fingerprint) and _current(runs_path(output), fingerprint)
    try:
        if unchanged:  # every run as when the file was written: it already holds exactly this
            n = sum(t.samples(["question_index"]).num_rows for t in results.tables)
        else:
            n = _write(output, (t.samples() for t in results.tables), arrow_schema(SAMPLES), fingerprint)
            _write(runs_path(output), [runs], arrow_schema(RUNS), fingerprint)
    except OSError as e:
        raise StorageError(f"cannot write {output}: {e.strerror or e}") from e
    total = len(results.tables)
    console.print(f"{total} run(s): {results.rebuilt} read from storage, {total - results.rebuilt} unchanged "
                  "since they were last read", markup=False)
    for status in ("partial", "failed"):
        states = zip(runs.column("run_id").to_pylist(), runs.column("run_status").to_pylist(), strict=True)
        ids = sorted({run_id for run_id, state in states if state == status})
        if ids:
            what = "still running, or a model not started" if status == "partial" else "a model failed"
            console.print(Text(f"  {status} ({what}): {', '.join(ids)}"))
    same = " (unchanged, not rewritten)" if unchanged else ""
    console.print(f"{n:,} answers → {output}{same}", markup=False)
    console.print(f"{runs.num_rows:,} model runs → {runs_path(output)}{same}", markup=False)
    return 0
