"""A run's artefacts in a ``Storage``: staging, reading back, and assembling the derived files.

Everything here is idempotent and order-free, because a local rerun, any shard of a sharded
model and ``launcher collect`` may each call it at any time:

- a record (``records/NNNNNN.json``) marks one question done; everything else is derived;
- ``responses.jsonl``, the merged manifest of a sharded model and ``embeddings.npy`` are
  rebuilt from all the records every time, and written last.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from runner.artefacts import jsonl
from runner.artefacts.keys import Keys, record_index
from runner.artefacts.records import SCHEMA_VERSION, ModelManifest, ResponseRecord, RunInfo, combined_state
from runner.errors import InputError, StorageNotFound
from runner.plan import ModelTask, Plan
from runner.questions import Question, parse_questions
from runner.storage import Storage

log = logging.getLogger("medbench.runner")

#: How ``read_run_info`` says a run is missing; callers may word the fix for their user.
NO_RUN = "no run '{run_id}' in {url} (no {key} there); check the run id and --from"


# --- run.json and questions.jsonl ----------------------------------------------------------


def read_run_info(storage: Storage, run_id: str, *, missing: str = NO_RUN) -> RunInfo:
    """run.json of a run; ``InputError`` (exit 2) when there is none or it cannot be read.

    ``missing`` is the message for a run that is not there, formatted with ``run_id``,
    ``url``, ``key`` and ``where`` (the full location of run.json).
    """
    key = Keys(run_id).run_json
    where = f"{storage.url}/{key}"
    try:
        raw = storage.read_bytes(key)
    except StorageNotFound:
        raise InputError(missing.format(run_id=run_id, url=storage.url, key=key, where=where)) from None
    try:
        info = RunInfo.model_validate_json(raw)
    except ValidationError as e:
        raise InputError(f"{where}: not a valid run description: {first_error(e)}") from None
    if info.schema_version > SCHEMA_VERSION:
        raise InputError(f"{where}: written by a newer medbench (schema {info.schema_version}; this one "
                         f"reads {SCHEMA_VERSION}); upgrade medbench to read it")
    if info.run_id != run_id:
        raise InputError(f"{where} describes run '{info.run_id}', not '{run_id}'")
    return info


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def load_staged_questions(storage: Storage, run_id: str) -> list[Question]:
    key = Keys(run_id).questions
    return parse_questions(_staged_text(storage, key), f"{storage.url}/{key}")


def _staged_text(storage: Storage, key: str) -> str:
    """A staged text file; ``InputError`` when it is not UTF-8 (damaged, or not ours)."""
    data = storage.read_bytes(key)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{storage.url}/{key}: not UTF-8 text (byte {e.start}); "
                         "the run's staged files are damaged") from None


def stage_run(plan: Plan, storage: Storage, tasks: Iterable[ModelTask] | None = None) -> None:
    """Write run.json and questions.jsonl, after every check that could refuse the run.

    Refused (``InputError``, nothing written): other questions under the same run id, or a
    model of ``tasks`` (default: all) whose stored answers were made with other settings.
    run.json keeps its first ``created_at``; it is rewritten only when the config changed
    (a model added under the same ``--run-id``).
    """
    keys = Keys(plan.run_id)
    existing = check_can_stage(plan, storage, tasks)
    info = plan.run_info()
    try:
        old = RunInfo.model_validate_json(storage.read_bytes(keys.run_json))
    except (StorageNotFound, ValidationError):
        old = None
    if existing is None:
        storage.write_text(keys.questions, plan.questions_jsonl)
    if old is not None and (old.config, old.system_prompts) == (info.config, info.system_prompts):
        return
    if old is not None:
        info.created_at = old.created_at
    storage.write_text(keys.run_json, info.model_dump_json(indent=2))


def check_can_stage(plan: Plan, storage: Storage, tasks: Iterable[ModelTask] | None = None) -> str | None:
    """Every check of ``stage_run``, writing nothing; the questions.jsonl already staged, if any."""
    keys = Keys(plan.run_id)
    try:
        existing = _staged_text(storage, keys.questions)
    except StorageNotFound:
        existing = None
    if existing is not None and existing != plan.questions_jsonl:
        raise InputError(
            f"run {plan.run_id} in {storage.url} already holds different questions; "
            "choose another --run-id"
        )
    for task in plan.tasks if tasks is None else tasks:
        for manifest in model_manifests(storage, plan.run_id, task.model_dir, task.spec.shards):
            if manifest is not None:
                check_same_settings(manifest, task, plan.run_id)
    return existing


def check_same_settings(old: ModelManifest, task: ModelTask, run_id: str) -> None:
    """``InputError`` when ``old`` (a stored manifest) was made with other settings than ``task``."""
    if old.params_hash and old.params_hash != task.params_hash():
        raise InputError(
            f"{task.model_dir}: run {run_id} already holds answers made with other settings; "
            "start a new run (drop --run-id) instead of mixing them"
        )


# --- manifests ------------------------------------------------------------------------------


def read_manifest(storage: Storage, key: str) -> ModelManifest | None:
    """The manifest at ``key``; None when absent, or torn by a kill mid-write on a store
    without atomic writes (as if absent)."""
    try:
        return ModelManifest.model_validate_json(storage.read_bytes(key))
    except (StorageNotFound, ValidationError):
        return None


def model_manifests(storage: Storage, run_id: str, model_dir: str, shards: int) -> list[ModelManifest | None]:
    """The model's manifest, or each shard's (None where not written yet)."""
    keys = Keys(run_id, model_dir)
    if shards == 1:
        return [read_manifest(storage, keys.manifest)]
    return [read_manifest(storage, keys.shard_manifest(i)) for i in range(shards)]


# --- records --------------------------------------------------------------------------------


def read_records(storage: Storage, keys: Keys) -> dict[int, ResponseRecord]:
    """Every record of the model by question index; a torn or vanished record counts as absent."""
    out: dict[int, ResponseRecord] = {}
    for key in storage.list(keys.records):
        idx = record_index(key)
        if idx is None:
            continue
        try:
            out[idx] = ResponseRecord.model_validate_json(storage.read_bytes(key))
        except (ValueError, StorageNotFound):
            continue
    return out


def done_indices(records: dict[int, ResponseRecord]) -> set[int]:
    """Questions answered without error: a record with an error is retried by the next run."""
    return {i for i, r in records.items() if r.error is None}


def responses_jsonl(records: dict[int, ResponseRecord]) -> str:
    return jsonl.dumps_lines(records[i] for i in sorted(records))


# --- encoders' vectors ------------------------------------------------------------------------


def write_vectors(storage: Storage, keys: Keys, indices: list[int], vectors: np.ndarray) -> None:
    """One batch's vectors, written before its records (a record says the vector exists)."""
    buf = io.BytesIO()
    np.savez(buf, indices=np.asarray(indices, dtype=np.int64), vectors=vectors.astype(np.float32))
    storage.write_bytes(keys.vector_batch(indices), buf.getvalue())


def read_vectors(storage: Storage, keys: Keys) -> dict[int, np.ndarray]:
    """Every vector written so far for this model, by question index."""
    out: dict[int, np.ndarray] = {}
    for key in storage.list(keys.vectors):
        if not key.endswith(".npz"):
            continue
        try:
            with np.load(io.BytesIO(storage.read_bytes(key)), allow_pickle=False) as z:
                indices, vectors = z["indices"], z["vectors"]
        except (StorageNotFound, ValueError, OSError, KeyError):
            continue  # vanished or unreadable: its questions have no record either, so they rerun
        for i, v in zip(indices.tolist(), vectors, strict=True):
            out[int(i)] = v
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def assemble_embeddings(storage: Storage, plan: Plan, keys: Keys, done: set[int]) -> bool:
    """Write ``embeddings.npy`` for all the run's questions; False (nothing written) if any is missing."""
    vectors = read_vectors(storage, keys)
    wanted = [q.index for q in plan.questions]
    if any(i not in done or i not in vectors for i in wanted):
        return False
    matrix = np.stack([vectors[i] for i in wanted]).astype(np.float32)
    storage.write_bytes(keys.embeddings, npy_bytes(matrix))
    return True


# --- vectors keyed by text (answers' similarity vectors; the report's cache) -------------------
#
# One file holds ``keys`` (n, 32) uint8, the SHA-256 of each text, ``values`` (n, width) and
# ``identity``, the hash of what made the values (an encoder and its settings and weights), so
# a file is never read for another identity.


def text_key(text: str) -> bytes:
    """The 32-byte key of one text."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def identity_hash(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]


def pack_text_vectors(keys: Sequence[bytes] | np.ndarray, values: np.ndarray, ident: str) -> bytes:
    if not isinstance(keys, np.ndarray):
        keys = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
    buf = io.BytesIO()
    np.savez(buf, keys=keys, values=values, identity=np.array(ident))
    return buf.getvalue()


def unpack_text_vectors(data: bytes | Path, ident: str, dtype: Any) -> tuple[list[bytes], np.ndarray] | None:
    """(keys, values) of a file made by ``pack_text_vectors`` for ``ident``; None when it is for
    another identity, damaged, or not one (``data`` may be a path)."""
    try:
        with np.load(io.BytesIO(data) if isinstance(data, bytes) else data, allow_pickle=False) as z:
            if str(z["identity"]) != ident:
                return None
            keys, values = z["keys"], z["values"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if keys.ndim != 2 or keys.shape[1] != 32 or keys.dtype != np.uint8 or values.ndim != 2 \
            or values.shape[0] != keys.shape[0] or values.dtype != np.dtype(dtype):
        return None
    raw = keys.tobytes()
    return [raw[i : i + 32] for i in range(0, len(raw), 32)], values


def read_text_vectors(storage: Storage, prefix: str, ident: str) -> dict[bytes, np.ndarray]:
    """Every vector stored under ``prefix`` (a folder of ``*.npz``) for identity ``ident``."""
    out: dict[bytes, np.ndarray] = {}
    for key in storage.list(prefix):
        if not key.endswith(".npz"):
            continue
        try:
            found = unpack_text_vectors(storage.read_bytes(key), ident, np.float32)
        except StorageNotFound:
            continue
        if found is not None:
            out.update(zip(found[0], found[1], strict=True))
    return out


def write_text_vectors(storage: Storage, prefix: str, name: str, identity: dict[str, Any],
                       keys: Sequence[bytes], values: np.ndarray) -> None:
    """``<prefix><name>``, and ``<prefix>identity.json`` saying what the hash in it stands for."""
    ident = identity_hash(identity)
    if not storage.exists(f"{prefix}identity.json"):
        storage.write_text(f"{prefix}identity.json", json.dumps(identity, indent=2, sort_keys=True) + "\n")
    storage.write_bytes(f"{prefix}{name}", pack_text_vectors(keys, values.astype(np.float32), ident))


# --- the derived files ------------------------------------------------------------------------

# Rebuilding stops once a pass saw nothing change; a store that never settles gets this many.
_FINALIZE_PASSES = 5


def finalize_model(storage: Storage, plan: Plan, task: ModelTask) -> None:
    """Rebuild responses.jsonl, embeddings.npy and a sharded model's merged manifest.

    Derived from all the records every time, so the shard that finishes last, a rerun or a
    later ``collect`` all leave the same files. When two shards finish together, one may read
    the records (or the other's manifest) before the other's last ones land, and write after
    the other's complete files: so the records and the shard manifests are looked at again
    after writing, and a pass that read anything since changed is repeated. Whoever writes
    last has then read everything there is.
    """
    keys = Keys(plan.run_id, task.model_dir)
    before = _inputs(storage, keys, task)
    for _ in range(_FINALIZE_PASSES):
        records = read_records(storage, keys)
        storage.write_text(keys.responses, responses_jsonl(records))
        if task.spec.kind == "embed":
            assemble_embeddings(storage, plan, keys, done_indices(records))
        if task.spec.shards > 1:
            merged = merged_manifest(storage, plan, task, records)
            if merged is not None:
                storage.write_text(keys.manifest, merged.model_dump_json(indent=2))
        after = _inputs(storage, keys, task)
        if after == before:
            return
        before = after
    log.warning("%s: records kept changing while responses.jsonl was assembled; run collect again "
                "once every shard has finished", task.model_dir)


def _inputs(storage: Storage, keys: Keys, task: ModelTask) -> tuple:
    """What the derived files are made from: the record keys, and each shard's state."""
    shards: list[tuple | None] = []
    if task.spec.shards > 1:
        for part in model_manifests(storage, keys.run_id, keys.model_dir, task.spec.shards):
            shards.append(None if part is None else
                          (part.status, part.done, part.errors, part.error, part.finished_at))
    return frozenset(storage.list(keys.records)), tuple(shards)


def merged_manifest(storage: Storage, plan: Plan, task: ModelTask,
                    records: dict[int, ResponseRecord]) -> ModelManifest | None:
    """A sharded model's manifest, merged from its shards' and its records; None until every
    shard has written one (the last shard to finish writes it)."""
    parts = model_manifests(storage, plan.run_id, task.model_dir, task.spec.shards)
    if any(p is None for p in parts):
        return None
    present = [p for p in parts if p is not None]
    merged = present[0].model_copy(deep=True)
    merged.shard = merged.shards = None
    merged.total = sum(p.total for p in present)
    merged.done = len(done_indices(records))
    merged.errors = sum(1 for r in records.values() if r.error)
    merged.started_at = min(p.started_at or "" for p in present) or None
    merged.finished_at = max(p.finished_at or "" for p in present) or None
    merged.status = combined_state(parts, task.spec.shards)  # type: ignore[assignment]
    if merged.status == "complete" and merged.done < merged.total:
        merged.status = "running"  # every shard says complete, but not all records are visible yet
    merged.error = "; ".join(f"shard {i}: {p.error}" for i, p in enumerate(present) if p.error) or None
    merged.warnings = list(dict.fromkeys(w for p in present for w in p.warnings))
    merged.throughput = {"shards": [p.throughput for p in present]}
    return merged


def derived_files_agree(storage: Storage, plan: Plan, task: ModelTask) -> bool:
    """True when responses.jsonl (and a sharded model's merged manifest) say what the records
    say: the same questions, the same counts and state. ``collect`` rebuilds them otherwise."""
    keys = Keys(plan.run_id, task.model_dir)
    records = read_records(storage, keys)
    try:
        text = storage.read_text(keys.responses)
    except (StorageNotFound, UnicodeDecodeError):
        return False
    indices = {obj["index"] for _, obj in jsonl.parse(text, skip_bad=True)
               if isinstance(obj, dict) and isinstance(obj.get("index"), int)}
    if indices != set(records):
        return False
    if task.spec.shards > 1:
        expected = merged_manifest(storage, plan, task, records)
        current = read_manifest(storage, keys.manifest)
        if expected is not None and (current is None or _counts(current) != _counts(expected)):
            return False
    return True


def _counts(m: ModelManifest) -> tuple:
    return m.status, m.done, m.errors, m.total
