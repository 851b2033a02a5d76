"""plan → results: run one model (or one shard of it) over its questions, recording as it goes.

Storage layout under ``<run_id>/<model_dir>/`` (``runner.artefacts.keys``):

- ``N.txt``, the answer to question N (the original tool's layout);
- ``records/NNNNNN.json``, the full record of question N: written right after N.txt, it is
  what marks N as done, so a run killed at any moment loses at most the batch in flight;
- ``responses.jsonl`` and ``manifest.json``, assembled from the records at the end.

A record that holds an error does not count as done: starting the run again retries it.
The same class runs a model locally (``launcher run``) and in a pod (``runner``).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from runner.artefacts.keys import EMBEDDINGS_FILE, Keys
from runner.artefacts.records import ModelManifest, ResponseRecord, now_iso, package_versions
from runner.artefacts.stored import (
    check_same_settings,
    done_indices,
    finalize_model,
    read_manifest,
    read_records,
    write_vectors,
)
from runner.backends import create_backend
from runner.backends.base import AsyncGenerator, Backend, BatchGenerator, Embedder, GenRequest, GenResult
from runner.config.backends import APIModel
from runner.engine import answer_vectors
from runner.engine.batched import run_batched
from runner.engine.batching import Batches
from runner.engine.concurrent import ConcurrentStats, run_concurrent
from runner.engine.embedding import EmbeddingStats, run_embedding
from runner.engine.recording import NullProgress, Progress
from runner.errors import BackendFatal, InputError, MedbenchError, StorageError
from runner.plan import ModelTask, Plan
from runner.prompts import embedding_text, render_question
from runner.questions import Question
from runner.redact import redact
from runner.storage import Storage
from runner.storage.lease import Leases

log = logging.getLogger("medbench.runner")

# Answers that come back empty for a reason other than an error, and what to tell the user.
EMPTY_REASONS = {
    "length": "the output-token limit was reached before any answer text (thinking/reasoning "
              "tokens count against it); raise generation.max_new_tokens (now {limit})",
    "content_filter": "the provider's safety filter blocked the answer",
}
# Any other reason (an explicit empty text with "stop"): flagged, never a silent success.
EMPTY_OTHER = "the answer came back as empty text"
# Warnings rebuilt from the records at the end of every run; any other warning is carried over.
_DERIVED = re.compile(r"^(\d+ (answer\(s\) empty with finish_reason|question\(s\) longer than"
                      r"|answer\(s\) held lone surrogates|answer\(s\) reported impossible token usage) |"
                      + re.escape(answer_vectors.WARNING_PREFIX) + ")")


def requests_for(task: ModelTask, questions: list[Question]) -> list[GenRequest]:
    """What each question is sent as: the rendered user message (an encoder's text)."""
    templated = task.prompt_template is not None
    if task.spec.kind == "embed":
        out = []
        for q in questions:
            text = embedding_text(q, task.prompt_template)
            out.append(GenRequest(q, None, text, templated, prompt=text))
        return out
    return [GenRequest(q, task.system_prompt, render_question(q, task.prompt_template), templated)
            for q in questions]


def model_leases(storage: Storage, plan: Plan, parts: list[tuple[ModelTask, list[int]]], *,
                 command: str) -> Leases:
    """The leases of ``parts`` (each model with the shards this process runs), not yet taken.

    A process that runs a sharded model whole (``launcher run``) takes every shard's lease, so
    it excludes, and is excluded by, the pods of single shards.
    """
    keys = {}
    for task, shards in parts:
        for shard in shards:
            where = f" shard {shard + 1}/{task.spec.shards}" if task.spec.shards > 1 else ""
            keys[Keys(plan.run_id, task.model_dir).lease(shard)] = (
                f"run {plan.run_id}: model {task.model_dir}{where}")
    return Leases(storage, keys, command=command)


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
    """One model (or one shard of it) over its questions, writing as it goes.

    It is the engine's recorder: the drivers hand it each result (``store``), each batch's
    vectors (``store_vectors``) and a checkpoint after each batch.
    """

    def __init__(self, plan: Plan, task: ModelTask, storage: Storage, *,
                 progress: Progress | None = None, shard: int = 0, shards: int = 1,
                 lease: Leases | None = None, sizing: dict[str, Any] | None = None):
        self.plan, self.task, self.storage = plan, task, storage
        self.sizing = sizing
        # Held by the caller for as long as this runs; once lost, this run writes nothing more.
        self.lease = lease
        self.progress: Progress = progress or NullProgress()
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
            shard=shard if shards > 1 else None,
            shards=shards if shards > 1 else None,
            sizing=sizing,
        )
        self.tokens_out = 0
        #: The line said when the run stopped on an error and its manifest could not be marked
        #: failed (storage refused): the pod copies it into its stored log.
        self.stopped_note: str | None = None

    @property
    def manifest_key(self) -> str:
        return self.keys.manifest if self.shards == 1 else self.keys.shard_manifest(self.shard)

    def mine(self) -> list[Question]:
        return [q for q in self.plan.questions if (q.index - 1) % self.shards == self.shard]

    # --- the recorder ----------------------------------------------------------------------

    def store(self, req: GenRequest, res: GenResult) -> None:
        if self.lease is not None:
            self.lease.check()  # another process took over: its answers, not ours, from here on
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

    def store_vectors(self, indices: list[int], vectors: np.ndarray) -> None:
        write_vectors(self.storage, self.keys, indices, vectors)

    def checkpoint(self) -> None:
        self.save_manifest()

    def save_manifest(self) -> None:
        self.storage.write_text(self.manifest_key, self.manifest.model_dump_json(indent=2))

    # --- the loop ----------------------------------------------------------------------------

    def _carry_over(self) -> None:
        """Refuse other settings; keep what earlier runs of this model found and warned about."""
        old = read_manifest(self.storage, self.manifest_key)
        if old is None:
            return
        check_same_settings(old, self.task, self.plan.run_id)
        m = self.manifest
        m.started_at = old.started_at
        # A rerun with nothing left to do never loads the backend: keep what the last load found.
        m.revision, m.hardware, m.prompt_rule = old.revision, old.hardware, old.prompt_rule
        if "resolved" in old.parameters:
            m.parameters["resolved"] = old.parameters["resolved"]
        m.embedding, m.usage = old.embedding, old.usage
        m.sizing = m.sizing or old.sizing
        m.warnings = [w for w in old.warnings if not _DERIVED.match(w)]
        for name, value in (old.__pydantic_extra__ or {}).items():
            setattr(m, name, value)

    def run(self) -> ModelManifest:
        """Answer what is left; the manifest says how it ended. Never leaves it ``running``:
        an error that stops the run (say, storage failing while the answers are assembled)
        marks it failed with the reason, or, when storage refuses even that, says so on
        stderr and in :attr:`stopped_note`."""
        try:
            return self._run()
        except BaseException as e:
            self._leave_no_running(e)
            raise

    def _leave_no_running(self, error: BaseException) -> None:
        """Only a stored manifest of this model's settings that says ``running`` is touched:
        one of other settings (the run was refused) or one already complete or failed is left
        as it is, and a lease taken over leaves the manifest to its new holder."""
        if self.lease is not None and self.lease.lost is not None:
            return
        m = self.manifest
        try:
            stored = read_manifest(self.storage, self.manifest_key)
            if stored is None or stored.status != "running" or stored.params_hash != m.params_hash:
                return
            if not (m.status == "failed" and m.error):
                m.status, m.error = "failed", _reason(error)
            m.finished_at = m.finished_at or now_iso()
            self.save_manifest()
        except StorageError as e:
            self.stopped_note = (f"warning: {self.storage.url}/{self.manifest_key} still says 'running': "
                                 f"it could not be marked failed ({e}); the next attempt sets it right")
            print(self.stopped_note, file=sys.stderr)

    def _run(self) -> ModelManifest:
        self._carry_over()
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
        backend: Backend | None = None
        batches: Batches | None = None
        session: ConcurrentStats | EmbeddingStats | None = None
        busy = 0.0
        stopped = False  # interrupted or refused: no time for anything but the manifest
        t0 = time.perf_counter()
        try:
            if todo:
                backend = create_backend(self.task)
                info = backend.load()
                m.revision = info.pop("revision", None)
                m.hardware = info.pop("hardware", {})
                m.prompt_rule = info.pop("prompt_rule", getattr(backend, "prompt_rule", None))
                m.parameters["resolved"] = info
                requests = requests_for(self.task, todo)
                if isinstance(backend, Embedder):
                    batches = Batches(backend)
                    session = run_embedding(backend, requests, self, batches)
                    busy = session.busy_s
                elif isinstance(backend, AsyncGenerator):
                    assert isinstance(self.task.spec, APIModel)
                    session = run_concurrent(backend, requests, self, self.task.spec,
                                             max_new_tokens=self.task.generation.max_new_tokens,
                                             label=self.task.model_dir, progress=self.progress)
                    busy = session.wall_s
                elif isinstance(backend, BatchGenerator):
                    batches = Batches(backend)
                    busy = run_batched(backend, requests, self, batches)
                else:
                    raise TypeError(f"{type(backend).__name__} implements no backend interface")
            m.status = "complete" if m.errors == 0 else "failed"
            if m.errors:
                m.error = f"{m.errors} of {m.total} questions failed; run again to retry them"
        except KeyboardInterrupt:
            m.status, m.error = "failed", "interrupted"
            stopped = True
            raise
        except MedbenchError as e:
            m.status, m.error = "failed", str(e)
            if isinstance(e, InputError) and not isinstance(e, BackendFatal):
                stopped = True
                raise
        except Exception as e:  # a crash inside a model library: record it, keep the type
            log.exception("%s failed", self.task.model_dir)
            m.status, m.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            elapsed = time.perf_counter() - t0
            m.finished_at = now_iso()
            m.throughput = _throughput(m.done, self.tokens_out, elapsed, busy)
            if backend is not None:
                backend.close()
            if self.lease is None or self.lease.lost is None:
                indices = {q.index for q in mine}
                records = {i: r for i, r in read_records(self.storage, self.keys).items() if i in indices}
                if not stopped:
                    self._embed_answers(records)
                self._summarise(backend, batches, session, records)
                self.save_manifest()
                # Failed models too: what did get answered belongs in responses.jsonl.
                finalize_model(self.storage, self.plan, self.task)
            # else the new holder owns the manifest and the derived files now
            self.progress.finish(m)
        return m

    # --- what the manifest says at the end -------------------------------------------------

    def _embed_answers(self, records: dict[int, ResponseRecord]) -> None:
        """The answers' similarity vectors, stored for the report (runner.engine.answer_vectors)."""
        setting = self.plan.config.answer_embeddings
        name = answer_vectors.encoder_for(setting, self.task)
        if name is None:
            return
        if setting == "auto" and (why := answer_vectors.unavailable(name)):
            # Where it cannot run (an API model's small image) "auto" means "not here", not a fault.
            self.manifest.answer_vectors = {  # type: ignore[attr-defined] # an extra field of the manifest
                "encoder": name, "skipped": f"{why}; the report embeds these answers"}
            return
        self.progress.note(f"embedding answers for similarity ({name})")
        try:
            facts, warning = answer_vectors.embed_answers(
                self.storage, self.plan.run_id, self.task.model_dir, self.shard,
                [r.response for _, r in sorted(records.items()) if r.error is None and r.response],
                [q.reference for q in self.plan.questions if q.reference], name)
        finally:
            self.progress.note("")
        if facts is not None:
            self.manifest.answer_vectors = facts  # type: ignore[attr-defined] # an extra field of the manifest
        if warning is not None:
            self.manifest.warnings.append(warning)

    def _summarise(self, backend: Backend | None, batches: Batches | None,
                   session: ConcurrentStats | EmbeddingStats | None,
                   records: dict[int, ResponseRecord]) -> None:
        m = self.manifest
        new = list(backend.warnings) if backend is not None else []
        oom = batches.warning() if batches is not None else None
        if oom:
            new.append(oom)
        m.warnings = list(dict.fromkeys(m.warnings + new)) + self._derived_warnings(records)
        if isinstance(self.task.spec, APIModel):
            versions = Counter(str(v) for r in records.values()
                               if r.error is None and (v := (r.model_extra or {}).get("model_version")))
            if versions:
                m.revision = versions.most_common(1)[0][0]
            stats = session if isinstance(session, ConcurrentStats) else None
            m.usage = _usage(records, self.task.spec, stats)
            if isinstance(session, ConcurrentStats):
                m.throughput["concurrency"] = {"configured": session.concurrency,
                                               "at_end": session.concurrency_at_end}
        if isinstance(session, EmbeddingStats):
            facts = m.parameters.get("resolved", {})
            m.embedding = {
                "file": EMBEDDINGS_FILE,
                "dimension": session.dimension or facts.get("dimension"),
                "pooling": facts.get("pooling"),
                "normalize": facts.get("normalize"),
                "max_length": facts.get("max_length"),
                "text": "prompt_template" if self.task.prompt_template else "question, options, context",
                "truncated_this_run": session.truncated,
            }

    def _derived_warnings(self, records: dict[int, ResponseRecord]) -> list[str]:
        out = []
        limit = self.task.generation.max_new_tokens
        ordered = [r for _, r in sorted(records.items()) if r.error is None]
        empty = [r for r in ordered if r.response is not None and not r.response.strip()]
        reasons = list(EMPTY_REASONS) + sorted({str(r.finish_reason) for r in empty} - set(EMPTY_REASONS))
        for reason in reasons:
            ids = [r.id for r in empty if str(r.finish_reason) == reason]
            if ids:
                why = EMPTY_REASONS.get(reason, EMPTY_OTHER)
                out.append(f"{len(ids)} answer(s) empty with finish_reason '{reason}': "
                           f"{why.format(limit=limit)}; questions {_shown(ids)}")
        # Set by the API engine's vetting (runner.engine.untrusted).
        replaced = [r.id for r in ordered if (r.model_extra or {}).get("surrogates_replaced")]
        if replaced:
            out.append(f"{len(replaced)} answer(s) held lone surrogates (text no file can hold), each "
                       "replaced by U+FFFD; 'surrogates_replaced' in responses.jsonl says how many; "
                       f"questions {_shown(replaced)}")
        rejected = [r.id for r in ordered if (r.model_extra or {}).get("usage_rejected")]
        if rejected:
            out.append(f"{len(rejected)} answer(s) reported impossible token usage, recorded as unknown "
                       "and left out of the usage and cost totals ('usage_rejected' in responses.jsonl "
                       f"says why); questions {_shown(rejected)}")
        truncated = sum(1 for r in records.values() if r.truncated)
        if truncated:
            max_length = (self.manifest.embedding or {}).get("max_length") or \
                self.manifest.parameters.get("resolved", {}).get("max_length")
            out.append(f"{truncated} question(s) longer than {max_length} tokens were truncated "
                       "(see 'truncated' in responses.jsonl)")
        return out


def _shown(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")


def _throughput(done: int, tokens: int, elapsed: float, busy: float) -> dict[str, Any]:
    busy = busy or elapsed
    return {
        "elapsed_s": round(elapsed, 3),
        # Seconds inside the backend (generating, embedding, or waiting on the API): elapsed
        # minus loading and recording.
        "busy_s": round(busy, 3),
        "answers": done,
        "output_tokens": tokens,
        "answers_per_s": round(done / busy, 4) if busy else None,
        "output_tokens_per_s": round(tokens / busy, 2) if busy else None,
    }


def _usage(records: dict[int, ResponseRecord], spec: APIModel,
           session: ConcurrentStats | None) -> dict[str, Any]:
    # From the stored records, so a resumed run reports the whole model, not one session.
    answered = [records[i] for i in done_indices(records)]
    usage: dict[str, Any] = {
        "answered": len(answered),
        "input_tokens": sum(r.input_tokens or 0 for r in answered),
        "output_tokens": sum(r.output_tokens or 0 for r in answered),
        "reasoning_tokens": sum(r.reasoning_tokens or 0 for r in answered),
        "attempts": sum(r.attempts for r in records.values()),
    }
    if session is not None:
        usage["this_session"] = {
            "retries": session.retries,
            "failed_attempts": dict(session.failed_attempts),
            "rate_limited": session.rate_limited,
        }
    if spec.prices is not None:
        usage["cost_usd"] = round(sum(r.cost_usd or 0.0 for r in answered), 6)
        usage["prices_per_million"] = spec.prices.model_dump()
    return usage


def _reason(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, MedbenchError):
        return redact(str(error)) or type(error).__name__
    return redact(f"{type(error).__name__}: {error}")
