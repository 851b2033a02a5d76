"""Which runs a list of paths names, and a fingerprint of each that changes when the run does.

A path is a run (a folder or ``s3://bucket/prefix/run-id`` holding run.json or questions.jsonl)
or a place holding runs (``results/``, ``s3://bucket/runs``): every run one level below it.

An S3 prefix is listed once: one paginated ListObjectsV2 over the prefix (a thousand keys a
page) gives every run, and every key's size and ETag, with no request per file. A local
folder is read with one ``stat`` per file the tables are made of, and one per model's
``records/`` folder: the runner writes each record by renaming it into place, which changes
the folder's modification time, so a new or rewritten answer changes the fingerprint without
a ``stat`` per answer.

The fingerprint hashes those (key, size, tag) triples (the tag is an ETag on S3, a
modification time locally) with the code that builds the tables, so a run's tables are rebuilt
exactly when the run, or the way they are made, changed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from runner.artefacts.keys import MANIFEST, QUESTIONS, RECORDS_DIR, RESPONSES, RUN_JSON, SHARDS_DIR
from runner.errors import InputError
from runner.storage import Storage, open_storage, scheme_of

#: Keys of a run the tables are made of (relative to the run): the run's own files, and each
#: model's manifest, responses, records and shard manifests. Answers' N.txt, logs, leases,
#: vectors and the report's files are not.
_RUN_FILES = (RUN_JSON, QUESTIONS)
_MODEL_FILES = (MANIFEST, RESPONSES)

#: A listing entry: size in bytes and a tag (S3's ETag, a local modification time in ns).
Entry = tuple[int, str | None]


@dataclass
class RunRef:
    """One run in storage: ``storage`` holds it under ``run_id``; ``files`` is what was listed."""

    storage: Storage
    run_id: str
    files: dict[str, Entry] = field(default_factory=dict)  # keys relative to the run

    @property
    def url(self) -> str:
        return f"{self.storage.url.rstrip('/')}/{self.run_id}"

    @property
    def local(self) -> Path | None:
        """The run's folder, for a local run."""
        return self.storage.local_path(self.run_id)

    def fingerprint(self, code: str) -> str:
        h = hashlib.sha256(code.encode())
        for key in sorted(self.files):
            size, tag = self.files[key]
            h.update(f"{key}\t{size}\t{tag}\n".encode())
        return h.hexdigest()[:32]

    def model_dirs(self) -> list[str]:
        """Folders of the run that hold a model's manifest, responses or records."""
        return sorted({k.split("/", 1)[0] for k in self.files if "/" in k and relevant(k)})


def relevant(key: str) -> bool:
    """Whether a key (relative to its run) is one the tables are made of."""
    parts = key.split("/")
    if len(parts) == 1:
        return key in _RUN_FILES
    if parts[0].startswith("."):
        return False
    if len(parts) == 2:
        return parts[1] in _MODEL_FILES or parts[1] == RECORDS_DIR  # RECORDS_DIR: a local folder's stat
    return parts[1] in (RECORDS_DIR, SHARDS_DIR) and parts[-1].endswith(".json")


def find_runs(paths: list[str], *, endpoint: str | None = None) -> list[RunRef]:
    """Every run the paths name, in the order given (each once); ``InputError`` for a path that
    names no run."""
    out: dict[str, RunRef] = {}
    for path in paths:
        refs = _remote_runs(path, endpoint) if scheme_of(path).remote else _local_runs(path)
        for ref in refs:
            out.setdefault(ref.url, ref)
    return list(out.values())


# --- local folders ----------------------------------------------------------------------------


def _is_run_folder(p: Path) -> bool:
    return (p / RUN_JSON).is_file() or (p / QUESTIONS).is_file()


def _local_runs(path: str) -> list[RunRef]:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise InputError(f"{folder}: no such folder (expected a run folder, or a folder of runs)")
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file; expected a run folder, or a folder of runs")
    if _is_run_folder(folder):
        folder = folder.resolve()
        return [_local_ref(open_storage(str(folder.parent)), folder.name)]
    storage = open_storage(str(folder.resolve()))
    try:
        subs = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise InputError(f"{folder}: cannot read: {e.strerror or e}") from None
    refs = [_local_ref(storage, name) for name in subs if _is_run_folder(folder / name)]
    if not refs:
        raise InputError(f"{folder}: no runs in it (a run folder holds run.json and questions.jsonl)")
    return refs


def _stat(path: Path) -> Entry | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if not path.is_dir() else 0, str(st.st_mtime_ns)


def _local_ref(storage: Storage, run_id: str) -> RunRef:
    run = storage.local_path(run_id)
    assert run is not None, "a local folder's storage"
    files: dict[str, Entry] = {}
    for name in _RUN_FILES:
        if (entry := _stat(run / name)) is not None:
            files[name] = entry
    try:
        subs = [e for e in os.scandir(run) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        subs = []
    for sub in subs:
        for name in (*_MODEL_FILES, RECORDS_DIR):
            if (entry := _stat(Path(sub.path) / name)) is not None:
                files[f"{sub.name}/{name}"] = entry
        shards = Path(sub.path) / SHARDS_DIR
        if shards.is_dir():
            for p in shards.glob("*.json"):
                if (entry := _stat(p)) is not None:
                    files[f"{sub.name}/{SHARDS_DIR}/{p.name}"] = entry
    return RunRef(storage, run_id, files)


# --- remote stores (S3) ------------------------------------------------------------------------


def _remote_runs(url: str, endpoint: str | None) -> list[RunRef]:
    storage = open_storage(url, endpoint_url=endpoint)
    listing = storage.list_info("")  # the one listing: every key, size and ETag under the prefix
    if RUN_JSON in listing or QUESTIONS in listing:  # the prefix is one run
        parent, _, run_id = storage.url.rpartition("/")
        if parent.endswith(":/"):
            raise InputError(f"{url}: a run must sit under a prefix of the bucket "
                             f"({scheme_of(url).example}/run-id)")
        files = {k: v for k, v in listing.items() if relevant(k)}
        return [RunRef(open_storage(parent, endpoint_url=endpoint), run_id, files)]
    runs: dict[str, dict[str, Entry]] = {}
    for key, entry in listing.items():
        run_id, _, rest = key.partition("/")
        if rest and relevant(rest):
            runs.setdefault(run_id, {})[rest] = entry
    refs = [RunRef(storage, run_id, files) for run_id, files in sorted(runs.items())
            if RUN_JSON in files or QUESTIONS in files]
    if not refs:
        raise InputError(f"{storage.url}: no runs under it (a run holds run.json and questions.jsonl)")
    return refs
