"""One run read back from storage (a local folder or S3) for the tidy tables.

Read: run.json (as stored, any medbench version: a missing field is None, never an error),
questions.jsonl, and each model's manifest and answer records. A finished model's records come
from its responses.jsonl, parsed by pyarrow's JSON reader (in C++, the prompts never become
Python objects); record files missing from it are read on their own. A model still running, or
whose records/ changed after its responses.jsonl was written, is read the way the report reads
it (launcher.scoring.run_data): a line of responses.jsonl is used unless its record file differs
in size or is newer, and a record file without a line is read alone. A torn record counts as
not answered; a line that is not JSON is skipped, and noted.

``UnreadableRun`` says why a run cannot be read at all (no questions.jsonl: staged half way;
questions or run.json damaged); the caller skips it with that line.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from launcher.results.schema import require
from launcher.results.sources import Entry, RunRef
from runner.artefacts import jsonl
from runner.artefacts.keys import (
    MANIFEST,
    QUESTIONS,
    RECORDS_DIR,
    RESPONSES,
    RUN_JSON,
    SHARDS_DIR,
    record_index,
)
from runner.artefacts.records import ModelManifest, combined_state
from runner.errors import QuestionsError, StorageError, StorageNotFound
from runner.questions import Question, parse_questions

#: The fields of an answer record the tables keep, with their JSON types (the prompt is dropped).
RECORD_FIELDS: dict[str, str] = {
    "index": "int", "id": "str", "response": "str", "finish_reason": "str", "input_tokens": "int",
    "output_tokens": "int", "reasoning_tokens": "int", "latency_s": "float", "error": "str",
    "attempts": "int", "cost_usd": "float", "option_loglikelihoods": "floats", "prediction": "str",
    "prediction_norm": "str",
}
#: Parallel reads of one S3 run: its models, and a running model's records. With
#: ``store.REMOTE_RUNS_AT_ONCE`` runs at once, at most 4 x 4 x 2 requests are in flight: the S3
#: client's 32 connections (more would be opened and dropped, with a warning each).
MODELS_AT_ONCE = 4
RECORDS_AT_ONCE = 2


class UnreadableRun(Exception):
    """The run cannot be read at all; the message says why, in one line."""


@dataclass
class ModelRecords:
    model_dir: str
    manifest: dict[str, Any]
    status: str  # complete, failed, running, pending
    kind: str  # generate, embed
    #: One list per RECORD_FIELDS name, aligned, sorted by question index (one record each).
    columns: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.columns.get("index", []))


@dataclass
class RunContent:
    ref: RunRef
    info: dict[str, Any]
    questions: list[Question]
    models: list[ModelRecords]
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        states = {m.status for m in self.models if m.kind != "embed"} or {"pending"}
        if states & {"running", "pending"}:
            return "partial"
        return "failed" if "failed" in states else "complete"


def read_run(ref: RunRef) -> RunContent:
    read = _reader(ref)
    if QUESTIONS not in ref.files:  # known from the listing: nothing fetched for a run staged half way
        raise UnreadableRun("no questions.jsonl: the run was staged half way, or is not a run")
    info: dict[str, Any] = {}
    if RUN_JSON in ref.files:
        raw = read(RUN_JSON)
        try:
            parsed = json.loads(raw) if raw is not None else {}
        except (ValueError, UnicodeDecodeError):
            raise UnreadableRun("run.json is not valid JSON (damaged, or written half way)") from None
        info = parsed if isinstance(parsed, dict) else {}
    text = read(QUESTIONS) if QUESTIONS in ref.files else None
    if text is None:
        raise UnreadableRun("no questions.jsonl: the run was staged half way, or is not a run")
    try:
        questions = parse_questions(text.decode("utf-8"), f"{ref.url}/{QUESTIONS}")
    except UnicodeDecodeError:
        raise UnreadableRun("questions.jsonl is not UTF-8 text (damaged)") from None
    except QuestionsError as e:
        raise UnreadableRun(str(e).removeprefix(f"{ref.url}/")) from None
    content = RunContent(ref, info, questions, [])
    configured = _configured_models(info)
    names = list(configured) + [m for m in ref.model_dirs() if m not in configured]
    wanted = {q.index for q in questions}

    def one(model_dir: str) -> ModelRecords:
        return _read_model(ref, read, model_dir, configured.get(model_dir, 1), wanted, content.notes)

    if ref.local is not None:  # a folder: reading is local I/O, threads add nothing
        content.models = [one(m) for m in names]
    else:
        with ThreadPoolExecutor(max_workers=MODELS_AT_ONCE, thread_name_prefix="read-run") as pool:
            content.models = list(pool.map(one, names))
    return content


def _reader(ref: RunRef) -> Callable[[str], bytes | None]:
    """Read a key of the run; None when it vanished since the listing."""

    def read(key: str) -> bytes | None:
        try:
            return ref.storage.read_bytes(f"{ref.run_id}/{key}")
        except StorageNotFound:
            return None
        except StorageError as e:
            raise UnreadableRun(f"cannot read {key}: {e}") from None

    return read


def config_entries(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """model_dir → its models.yaml entry, in the config's order (run.json of any medbench version)."""
    out: dict[str, dict[str, Any]] = {}
    config = info.get("config")
    for m in (config.get("models") if isinstance(config, dict) else None) or []:
        if isinstance(m, dict) and isinstance(m.get("id"), str):
            name = m.get("name")
            out[name if isinstance(name, str) else m["id"].replace("/", "_")] = m
    return out


def _configured_models(info: dict[str, Any]) -> dict[str, int]:
    """model_dir → shards."""
    shards = {name: m.get("shards") for name, m in config_entries(info).items()}
    return {name: n if type(n) is int and n > 0 else 1 for name, n in shards.items()}


def _json_dict(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None  # torn by a kill mid-write on a store without atomic writes: as if absent
    return value if isinstance(value, dict) else None


def _state(ref: RunRef, read: Callable[[str], bytes | None], model_dir: str, shards: int,
           manifest: dict[str, Any] | None) -> str:
    if shards > 1:
        parts = []
        for i in range(shards):
            key = f"{model_dir}/{SHARDS_DIR}/{i}.json"
            raw = _json_dict(read(key)) if key in ref.files else None
            try:
                parts.append(ModelManifest.model_validate(raw) if raw is not None else None)
            except ValidationError:
                parts.append(None)
        if any(p is not None for p in parts):
            return combined_state(parts, shards)
    status = (manifest or {}).get("status")
    if status in ("running", "complete", "failed"):
        return status
    has_answers = f"{model_dir}/{RESPONSES}" in ref.files or any(
        k.startswith(f"{model_dir}/{RECORDS_DIR}") for k in ref.files)
    return "running" if has_answers else "pending"


def _read_model(ref: RunRef, read: Callable[[str], bytes | None], model_dir: str, shards: int,
                wanted: set[int], notes: list[str]) -> ModelRecords:
    manifest = _json_dict(read(f"{model_dir}/{MANIFEST}")) if f"{model_dir}/{MANIFEST}" in ref.files else None
    status = _state(ref, read, model_dir, shards, manifest)
    manifest = manifest or {}
    kind = "embed" if manifest.get("kind") == "embed" else "generate"
    out = ModelRecords(model_dir, manifest, status, kind)
    if kind == "embed" or status == "pending":
        out.columns = {name: [] for name in RECORD_FIELDS}
        return out
    responses_key = f"{model_dir}/{RESPONSES}"
    raw = read(responses_key) if responses_key in ref.files else None
    rows: dict[int, dict[str, Any]] | None = None
    if raw is not None and status in ("complete", "failed") and not _records_newer(ref, model_dir):
        rows = _parse_fast(raw)
        if rows is not None:
            # A record the file lacks (a shard that finished as it was written) is read alone.
            missing = [i for i in _record_files(ref, model_dir, sizes=False) if i not in rows]
            rows.update(_fetch_records(ref, read, model_dir, missing, {}))
    if rows is None:
        rows, bad = _merge(ref, read, model_dir, raw, _record_files(ref, model_dir))
        if bad:
            notes.append(f"{model_dir}/{RESPONSES}: {bad} line(s) not JSON, skipped (their record files "
                         "were read where present)")
    out.columns = _columns([rows[i] for i in sorted(rows) if i in wanted])
    return out


def _record_files(ref: RunRef, model_dir: str, sizes: bool = True) -> dict[int, Entry]:
    """Record files by question index: from the listing (S3), or the folder itself (local; with
    ``sizes=False`` only their names are read, no ``stat`` each)."""
    prefix = f"{model_dir}/{RECORDS_DIR}/"
    local = ref.local
    if local is None:
        listed = ((record_index(k), e) for k, e in ref.files.items() if k.startswith(prefix))
        return {i: e for i, e in listed if i is not None}
    out: dict[int, Entry] = {}
    try:
        with os.scandir(local / model_dir / RECORDS_DIR) as entries:
            for e in entries:
                i = record_index(e.name)
                if i is None:
                    continue
                if not sizes:
                    out[i] = (0, None)
                elif e.is_file():
                    st = e.stat()
                    out[i] = (st.st_size, str(st.st_mtime_ns))
    except OSError:
        pass
    return out


def _records_newer(ref: RunRef, model_dir: str) -> bool:
    """Locally: a record was written after responses.jsonl (a rerun stopped before assembling it)."""
    if ref.local is None:
        return False
    folder = ref.files.get(f"{model_dir}/{RECORDS_DIR}")
    responses = ref.files.get(f"{model_dir}/{RESPONSES}")
    return folder is not None and responses is not None and int(folder[1] or 0) > int(responses[1] or 0)


def _parse_fast(raw: bytes) -> dict[int, dict[str, Any]] | None:
    """Every line of a responses.jsonl by index (the last of a repeated index wins); None when
    pyarrow cannot read it as one table (a damaged line, a field of another type)."""
    pa = require("pyarrow")
    pj = require("pyarrow.json")
    types = {"int": pa.int64(), "str": pa.string(), "float": pa.float64(), "floats": pa.list_(pa.float64())}
    schema = pa.schema([(name, types[t]) for name, t in RECORD_FIELDS.items()])
    if not raw.strip():
        return {}
    try:
        table = pj.read_json(io.BytesIO(raw),
                             read_options=pj.ReadOptions(use_threads=False, block_size=1 << 26),
                             parse_options=pj.ParseOptions(explicit_schema=schema,
                                                           unexpected_field_behavior="ignore"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    data = table.to_pydict()
    names = list(data)
    out: dict[int, dict[str, Any]] = {}
    for values in zip(*(data[n] for n in names), strict=True):
        row = dict(zip(names, values, strict=True))
        if row["index"] is not None:
            out[row["index"]] = row
    return out


def _merge(ref: RunRef, read: Callable[[str], bytes | None], model_dir: str, raw: bytes | None,
           records: dict[int, Entry]) -> tuple[dict[int, dict[str, Any]], int]:
    """The report's rule (launcher.scoring.run_data): each answer once, the newest copy winning."""
    lines: dict[int, tuple[dict[str, Any], int]] = {}
    bad = 0
    if raw is not None:
        for lineno, raw_line in jsonl.binary_lines(io.BytesIO(raw)):
            if not raw_line.strip():
                continue
            try:
                rec = _clean(jsonl.loads(raw_line, lineno))
            except jsonl.JSONLError:
                bad += 1
                continue
            if rec is not None:
                lines[rec["index"]] = (rec, len(raw_line))
    written = (ref.files.get(f"{model_dir}/{RESPONSES}") or (0, None))[1]
    rows = {i: rec for i, (rec, _) in lines.items()}
    stale = []
    for i, (size, tag) in records.items():
        kept = lines.get(i)
        newer = ref.local is not None and written is not None and tag is not None and int(tag) > int(written)
        if kept is None or kept[1] != size or newer:
            stale.append(i)
    rows.update(_fetch_records(ref, read, model_dir, stale, lines))
    return rows, bad


def _fetch_records(ref: RunRef, read: Callable[[str], bytes | None], model_dir: str, indices: list[int],
                   fallback: dict[int, tuple[dict[str, Any], int]]) -> dict[int, dict[str, Any]]:
    def one(i: int) -> tuple[int, dict[str, Any] | None]:
        raw = read(f"{model_dir}/{RECORDS_DIR}/{i:06d}.json")
        rec = _clean(_json_dict(raw)) if raw is not None else None
        if rec is None and i in fallback:
            rec = fallback[i][0]  # a torn or vanished record file: its line, if any
        return i, rec

    if ref.local is not None or len(indices) < 2:
        found = [one(i) for i in indices]
    else:
        with ThreadPoolExecutor(max_workers=RECORDS_AT_ONCE, thread_name_prefix="read-records") as pool:
            found = list(pool.map(one, indices))
    return {i: rec for i, rec in found if rec is not None}


def _clean(obj: Any) -> dict[str, Any] | None:
    """The kept fields of one record, each of its JSON type or None; None for no record at all."""
    if not isinstance(obj, dict) or type(obj.get("index")) is not int:
        return None
    out: dict[str, Any] = {}
    for name, kind in RECORD_FIELDS.items():
        v: Any = obj.get(name)
        if kind == "int":
            v = v if type(v) is int else None
        elif kind == "float":
            v = float(v) if type(v) in (int, float) else None
        elif kind == "str":
            v = v if isinstance(v, str) else None
        elif kind == "floats":
            numbers = isinstance(v, list) and all(type(x) in (int, float) for x in v)
            v = [float(x) for x in v] if numbers else None
        out[name] = v
    return out


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [r.get(name) for r in rows] for name in RECORD_FIELDS}
