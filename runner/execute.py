"""plan → results: run one model over its questions and record every answer as it comes.

Storage layout under ``<run_id>/<model_dir>/`` (see DESIGN.md):

- ``N.txt``, the answer to question N (the original tool's layout);
- ``records/NNNNNN.json``, the full record of question N: written right after N.txt, it is
  what marks N as done, so a run killed at any moment loses at most the batch in flight;
- ``responses.jsonl`` and ``manifest.json``, assembled from the records at the end.

A record that holds an error does not count as done: starting the run again retries it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from runner.backends import create_backend
from runner.backends.base import GenerateBackend, GenRequest, GenResult
from runner.errors import BackendFatal, InputError, MedbenchError, StorageNotFound
from runner.plan import ModelTask, Plan
from runner.prompts import render_question
from runner.questions import Question, parse_questions
from runner.records import ModelManifest, ResponseRecord, now_iso, package_versions
from runner.storage import Storage

log = logging.getLogger("medbench.runner")


class Progress(Protocol):
    def start(self, task: ModelTask, total: int, done: int) -> None: ...
    def advance(self, n: int, tokens: int) -> None: ...
    def finish(self, manifest: ModelManifest) -> None: ...


class NullProgress:
    def start(self, task, total, done):
        log.info("%s: %d questions, %d already done", task.model_dir, total, done)

    def advance(self, n, tokens):
        pass

    def finish(self, manifest):
        log.info("%s: %s (%d/%d, %d errors)", manifest.model_dir, manifest.status,
                 manifest.done, manifest.total, manifest.errors)


# --- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    run_id: str
    model_dir: str = ""

    @property
    def run_json(self) -> str:
        return f"{self.run_id}/run.json"

    @property
    def questions(self) -> str:
        return f"{self.run_id}/questions.jsonl"

    @property
    def model(self) -> str:
        return f"{self.run_id}/{self.model_dir}"

    def answer(self, index: int) -> str:
        return f"{self.model}/{index}.txt"

    def record(self, index: int) -> str:
        return f"{self.model}/records/{index:06d}.json"

    @property
    def records(self) -> str:
        return f"{self.model}/records/"

    @property
    def responses(self) -> str:
        return f"{self.model}/responses.jsonl"

    @property
    def manifest(self) -> str:
        return f"{self.model}/manifest.json"

    def shard_manifest(self, shard: int) -> str:
        return f"{self.model}/shards/{shard}.json"

    def log(self, shard: int = 0, shards: int = 1) -> str:
        return f"{self.model}/runner.log" if shards == 1 else f"{self.model}/shards/{shard}.log"


def record_index(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(".json"):
        return None
    try:
        return int(name[:-5])
    except ValueError:
        return None


# --- staging -------------------------------------------------------------------------------


def stage_run(plan: Plan, storage: Storage) -> None:
    """Write run.json and questions.jsonl; refuse to mix different questions in one run."""
    keys = Keys(plan.run_id)
    try:
        existing = storage.read_text(keys.questions)
    except StorageNotFound:
        existing = None
    if existing is not None and existing != plan.questions_jsonl:
        raise InputError(
            f"run {plan.run_id} in {storage.url} already holds different questions; "
            "choose another --run-id"
        )
    if existing is None:
        storage.write_text(keys.questions, plan.questions_jsonl)
    storage.write_text(keys.run_json, plan.run_info().model_dump_json(indent=2))


def load_staged_questions(storage: Storage, run_id: str) -> list[Question]:
    text = storage.read_text(Keys(run_id).questions)
    return parse_questions(text.splitlines(), f"{storage.url}/{run_id}/questions.jsonl")


# --- reading what is there -----------------------------------------------------------------


def read_records(storage: Storage, keys: Keys) -> dict[int, ResponseRecord]:
    out: dict[int, ResponseRecord] = {}
    for key in storage.list(keys.records):
        idx = record_index(key)
        if idx is None:
            continue
        try:
            out[idx] = ResponseRecord.model_validate_json(storage.read_bytes(key))
        except (ValueError, StorageNotFound):
            continue  # a torn or vanished record: treat as not done
    return out


def done_indices(records: dict[int, ResponseRecord]) -> set[int]:
    return {i for i, r in records.items() if r.error is None}


# --- running -------------------------------------------------------------------------------


def _requests(task: ModelTask, questions: Iterable[Question]) -> list[GenRequest]:
    templated = task.prompt_template is not None
    return [
        GenRequest(q, task.system_prompt, render_question(q, task.prompt_template), templated)
        for q in questions
    ]


def _record(req: GenRequest, res: GenResult) -> ResponseRecord:
    q = req.question
    return ResponseRecord(
        id=q.id,
        index=q.index,
        prompt=req.prompt,
        response=res.text,
        finish_reason=res.finish_reason,
        input_tokens=res.input_tokens,
        output_tokens=res.output_tokens,
        reasoning_tokens=res.reasoning_tokens,
        latency_s=res.latency_s,
        error=res.error,
        attempts=res.attempts,
        **res.extra,
    )


class ModelRun:
    """One model (or one shard of it) over its questions, writing as it goes."""

    def __init__(self, plan: Plan, task: ModelTask, storage: Storage, *,
                 progress: Progress | None = None, shard: int = 0, shards: int = 1):
        self.plan, self.task, self.storage = plan, task, storage
        self.progress = progress or NullProgress()
        self.shard, self.shards = shard, shards
        self.keys = Keys(plan.run_id, task.model_dir)
        self.manifest = ModelManifest(
            run_id=plan.run_id,
            model=task.spec.id,
            model_dir=task.model_dir,
            backend=task.spec.backend,
            kind=task.spec.kind,
            parameters=task.parameters(),
            params_hash=task.params_hash(),
            system_prompt_hash=task.system_prompt_hash,
            versions=package_versions(),
        )
        if shards > 1:
            self.manifest.shard = shard  # type: ignore[attr-defined]
            self.manifest.shards = shards  # type: ignore[attr-defined]
        self.tokens_out = 0
        self.gen_seconds = 0.0

    @property
    def manifest_key(self) -> str:
        return self.keys.manifest if self.shards == 1 else self.keys.shard_manifest(self.shard)

    def mine(self) -> list[Question]:
        return [q for q in self.plan.questions if (q.index - 1) % self.shards == self.shard]

    def _check_same_settings(self) -> None:
        try:
            old = ModelManifest.model_validate_json(self.storage.read_bytes(self.manifest_key))
        except StorageNotFound:
            return
        if old.params_hash and old.params_hash != self.manifest.params_hash:
            raise InputError(
                f"{self.task.model_dir}: run {self.plan.run_id} already holds answers made with "
                "other settings; start a new run (drop --run-id) instead of mixing them"
            )
        self.manifest.started_at = old.started_at
        # A rerun with nothing left to do never loads the backend: keep what the last load found.
        for name in ("revision", "hardware", "prompt_rule"):
            setattr(self.manifest, name, getattr(old, name))
        if "resolved" in old.parameters:
            self.manifest.parameters["resolved"] = old.parameters["resolved"]
        for name, value in (old.__pydantic_extra__ or {}).items():
            if name not in ("shard", "shards"):
                setattr(self.manifest, name, value)

    def save_manifest(self) -> None:
        self.storage.write_text(self.manifest_key, self.manifest.model_dump_json(indent=2))

    def store(self, req: GenRequest, res: GenResult) -> ResponseRecord:
        rec = _record(req, res)
        if rec.error is None and rec.response is not None:
            self.storage.write_text(self.keys.answer(rec.index), rec.response)
        self.storage.write_text(self.keys.record(rec.index), rec.model_dump_json(exclude_none=True))
        self.tokens_out += rec.output_tokens or 0
        if rec.error is None:
            self.manifest.done += 1
        else:
            self.manifest.errors += 1
            log.warning("%s: question %s failed: %s", self.task.model_dir, rec.id, rec.error)
        self.progress.advance(1, rec.output_tokens or 0)
        return rec

    def run(self) -> ModelManifest:
        self._check_same_settings()
        mine = self.mine()
        records = read_records(self.storage, self.keys)
        done = done_indices(records) & {q.index for q in mine}
        todo = [q for q in mine if q.index not in done]
        m = self.manifest
        m.total, m.done, m.errors = len(mine), len(done), 0
        m.started_at = m.started_at or now_iso()
        m.status, m.error = "running", None
        self.save_manifest()
        self.progress.start(self.task, len(mine), len(done))
        backend = None
        t0 = time.perf_counter()
        try:
            if todo:
                backend = create_backend(self.task)
                info = backend.load()
                m.revision = info.pop("revision", None)
                m.hardware = info.pop("hardware", {})
                m.prompt_rule = info.pop("prompt_rule", getattr(backend, "prompt_rule", None))
                m.parameters["resolved"] = info
                if backend.kind == "embed":
                    from runner.embed_runner import run_embeddings

                    run_embeddings(self, backend, todo)
                elif backend.is_async:
                    from runner.api_runner import run_async

                    run_async(self, backend, _requests(self.task, todo))
                else:
                    self._run_batches(backend, _requests(self.task, todo))
            m.status = "complete" if m.errors == 0 else "failed"
            if m.errors:
                m.error = f"{m.errors} of {m.total} questions failed; run again to retry them"
        except KeyboardInterrupt:
            m.status, m.error = "failed", "interrupted"
            raise
        except MedbenchError as e:
            m.status, m.error = "failed", str(e)
            if isinstance(e, InputError) and not isinstance(e, BackendFatal):
                raise
        except Exception as e:  # a crash inside a model library: record it, keep the type
            log.exception("%s failed", self.task.model_dir)
            m.status, m.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            elapsed = time.perf_counter() - t0
            m.finished_at = now_iso()
            m.throughput = _throughput(m.done, self.tokens_out, elapsed, self.gen_seconds)
            if backend is not None:
                if getattr(backend, "oom_backoffs", 0):
                    m.warnings.append(
                        f"out of memory {backend.oom_backoffs} time(s); batch size lowered to "
                        f"{backend.batch_size}"
                    )
                backend.close()
            self.save_manifest()
            # Failed models too: what did get answered belongs in responses.jsonl.
            finalize_model(self.storage, self.plan, self.task)
            self.progress.finish(m)
        return m

    def _run_batches(self, backend: GenerateBackend, requests: list[GenRequest]) -> None:
        for r in requests:
            r.prompt = backend.build_prompt(r)
        # Longest first: similar lengths share a batch (less padding), and an out-of-memory
        # error shows up on the first batch rather than after an hour.
        requests.sort(key=lambda r: backend.prompt_length(r.prompt), reverse=True)
        i = 0
        while i < len(requests):
            chunk = requests[i : i + backend.batch_size]
            t = time.perf_counter()
            results = backend.generate(chunk)
            self.gen_seconds += time.perf_counter() - t
            for req, res in zip(chunk, results, strict=True):
                self.store(req, res)
            i += len(chunk)
            self.save_manifest()


def _throughput(done: int, tokens: int, elapsed: float, gen_seconds: float) -> dict[str, Any]:
    busy = gen_seconds or elapsed
    return {
        "elapsed_s": round(elapsed, 3),
        "answers": done,
        "output_tokens": tokens,
        "answers_per_s": round(done / busy, 4) if busy else None,
        "output_tokens_per_s": round(tokens / busy, 2) if busy else None,
    }


def finalize_model(storage: Storage, plan: Plan, task: ModelTask) -> None:
    """Assemble responses.jsonl (and, for shards, the merged manifest) from the records.

    Idempotent, so any shard that finishes last, or a later ``collect``, may call it.
    """
    keys = Keys(plan.run_id, task.model_dir)
    records = read_records(storage, keys)
    lines = [records[i].model_dump_json(exclude_none=True) for i in sorted(records)]
    storage.write_text(keys.responses, "".join(line + "\n" for line in lines))
    if task.spec.kind == "embed":
        # Here rather than only in the embed runner: a rerun with nothing left to embed (killed
        # after its last record) and the last shard to finish both complete the file.
        from runner.embed_runner import assemble_embeddings

        assemble_embeddings(storage, plan, task)
    shards = task.spec.shards
    if shards == 1:
        return
    parts = []
    for s in range(shards):
        try:
            parts.append(ModelManifest.model_validate_json(storage.read_bytes(keys.shard_manifest(s))))
        except StorageNotFound:
            return
    merged = parts[0].model_copy(deep=True)
    merged.total = sum(p.total for p in parts)
    merged.done = len(done_indices(records))
    merged.errors = sum(1 for r in records.values() if r.error)
    merged.started_at = min(p.started_at or "" for p in parts) or None
    merged.finished_at = max(p.finished_at or "" for p in parts) or None
    states = {p.status for p in parts}
    merged.status = "running" if "running" in states else (
        "failed" if "failed" in states else "complete")
    merged.error = "; ".join(f"shard {i}: {p.error}" for i, p in enumerate(parts) if p.error) or None
    merged.throughput = {"shards": [p.throughput for p in parts]}
    extra = merged.__pydantic_extra__ or {}
    extra.pop("shard", None)
    storage.write_text(keys.manifest, merged.model_dump_json(indent=2))


def read_json(storage: Storage, key: str) -> Any:
    return json.loads(storage.read_text(key))
