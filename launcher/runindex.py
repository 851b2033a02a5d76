"""The local index of runs started from this machine: a run id is enough to find the run again.

``launcher submit`` records where each run went (storage URL and endpoint, namespace, kubeconfig
context), and ``launcher run`` where it wrote (a folder, as an absolute path, or s3://), in
``runs.json`` in the cache folder (``launcher.cache``). ``status``, ``logs``, ``collect`` and
``cancel`` look the run id up there when no ``--from`` / ``-n`` is given. The
index holds no secrets, only names and addresses; deleting it loses nothing but the
convenience (the run's Jobs carry the same facts in their annotations while they exist).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from launcher.cache import cache_dir, read_json, write_json

#: Oldest entries are dropped beyond this: the index answers "where did my recent run go".
MAX_RUNS = 500


@dataclass(frozen=True)
class RunEntry:
    run_id: str
    output: str  #: the storage URL the run was staged in (s3://bucket/prefix or a folder)
    endpoint: str | None = None  #: the S3 endpoint the launcher reached it by
    namespace: str | None = None
    context: str | None = None
    kubeconfig: str | None = None
    submitted_at: str = ""
    config: str | None = None  #: the models.yaml it came from, as an absolute path
    #: True for ``launcher submit`` (the run has Jobs worth asking about), False for ``launcher run``
    submitted: bool = True


def index_path() -> Path:
    return cache_dir() / "runs.json"


def _load() -> dict[str, dict]:
    data = read_json(index_path())
    runs = data.get("runs") if isinstance(data, dict) else None
    return runs if isinstance(runs, dict) else {}


def lookup(run_id: str) -> RunEntry | None:
    raw = _load().get(run_id)
    if not isinstance(raw, dict):
        return None
    known = {f.name for f in fields(RunEntry)}
    try:
        return RunEntry(**{k: v for k, v in raw.items() if k in known})
    except TypeError:  # an entry written by hand or by another version, missing a field
        return None


def record(entry: RunEntry) -> None:
    """Add or replace the run's entry; OSError when the cache folder cannot be written.

    A local run of a submitted run in the same storage (finishing a model on a laptop) keeps the
    submitted entry: its namespace and context are what ``cancel`` and ``logs`` still need."""
    runs = _load()
    old = lookup(entry.run_id)
    if not entry.submitted and old is not None and old.submitted and old.output == entry.output:
        return
    if not entry.submitted_at:
        entry = RunEntry(**{**asdict(entry), "submitted_at": datetime.now(UTC).isoformat(timespec="seconds")})
    runs.pop(entry.run_id, None)
    runs[entry.run_id] = asdict(entry)
    if len(runs) > MAX_RUNS:
        runs = dict(sorted(runs.items(), key=lambda kv: str(kv[1].get("submitted_at", "")))[-MAX_RUNS:])
    write_json(index_path(), {"runs": runs})


def entries() -> list[RunEntry]:
    """Every recorded run, oldest first."""
    out = [e for rid in _load() if (e := lookup(rid)) is not None]
    return sorted(out, key=lambda e: e.submitted_at)
