"""Run an encoder over its questions: vectors per batch, a record per question, then embeddings.npy.

Durability follows the generative runner: each batch's vectors are written to
``<model>/vectors/<first>-<last>-<hash>.npz`` *before* its records, and a record is what marks
a question done, so a run killed at any moment redoes at most the batch in flight. At the end
every batch file of the run (earlier, interrupted runs included) is gathered into
``embeddings.npy``, row i = question i, written only once every question has its vector.
"""

from __future__ import annotations

import hashlib
import io
import time
from typing import TYPE_CHECKING

import numpy as np

from runner.backends.base import EmbedBackend, GenRequest, GenResult
from runner.embeddings import EMBEDDINGS_FILE, VECTORS_DIR, embedding_text, npy_bytes
from runner.errors import StorageNotFound
from runner.execute import Keys, done_indices, read_records
from runner.plan import ModelTask, Plan
from runner.questions import Question
from runner.storage import Storage

if TYPE_CHECKING:
    from runner.execute import ModelRun


def vectors_prefix(keys: Keys) -> str:
    return f"{keys.model}/{VECTORS_DIR}/"


def batch_key(keys: Keys, indices: list[int]) -> str:
    # Named by what it holds: the same questions give the same key (an identical rewrite on
    # a rerun), different batches never collide.
    digest = hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:12]
    return f"{vectors_prefix(keys)}{min(indices):06d}-{max(indices):06d}-{digest}.npz"


def write_batch(storage: Storage, keys: Keys, indices: list[int], vectors: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, indices=np.asarray(indices, dtype=np.int64), vectors=vectors.astype(np.float32))
    storage.write_bytes(batch_key(keys, indices), buf.getvalue())


def read_vectors(storage: Storage, keys: Keys) -> dict[int, np.ndarray]:
    """Every vector written so far for this model, by question index."""
    out: dict[int, np.ndarray] = {}
    for key in storage.list(vectors_prefix(keys)):
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


def assemble_embeddings(storage: Storage, plan: Plan, task: ModelTask) -> bool:
    """Write ``embeddings.npy`` for all the run's questions; False (nothing written) if any is missing.

    Idempotent and shard-safe: whichever shard finishes last, or a later rerun, completes it.
    """
    keys = Keys(plan.run_id, task.model_dir)
    done = done_indices(read_records(storage, keys))
    vectors = read_vectors(storage, keys)
    wanted = [q.index for q in plan.questions]
    if any(i not in done or i not in vectors for i in wanted):
        return False
    matrix = np.stack([vectors[i] for i in wanted]).astype(np.float32)
    storage.write_bytes(f"{keys.model}/{EMBEDDINGS_FILE}", npy_bytes(matrix))
    return True


def _requests(task: ModelTask, questions: list[Question]) -> list[GenRequest]:
    template = task.prompt_template
    out = []
    for q in questions:
        text = embedding_text(q, template)
        out.append(GenRequest(q, None, text, template is not None, prompt=text))
    return out


def run_embeddings(run: ModelRun, backend: EmbedBackend, questions: list[Question]) -> None:
    """Embed ``questions`` (those not yet done) batch by batch, then assemble embeddings.npy."""
    requests = _requests(run.task, questions)
    # Longest first: similar lengths share a batch (less padding), and an out-of-memory
    # error shows up on the first batch.
    requests.sort(key=lambda r: len(r.prompt), reverse=True)
    dimension = None
    truncated = 0
    for start in range(0, len(requests), backend.batch_size):
        chunk = requests[start : start + backend.batch_size]
        t0 = time.perf_counter()
        vectors, infos = backend.embed([r.prompt for r in chunk])
        elapsed = time.perf_counter() - t0
        run.gen_seconds += elapsed
        dimension = int(vectors.shape[1])
        write_batch(run.storage, run.keys, [r.question.index for r in chunk], vectors)
        for req, vec, info in zip(chunk, vectors, infos, strict=True):
            finite = bool(np.isfinite(vec).all())
            truncated += bool(info["truncated"])
            run.store(req, GenResult(
                text=None,
                input_tokens=int(info["tokens"]),
                latency_s=round(elapsed, 4),
                error=None if finite else "the encoder returned NaN or infinite values",
                extra={"dimension": dimension, "truncated": bool(info["truncated"])},
            ))
        run.save_manifest()
    facts = run.manifest.parameters.get("resolved", {})
    run.manifest.embedding = {  # type: ignore[attr-defined]
        "file": EMBEDDINGS_FILE,
        "dimension": dimension or facts.get("dimension"),
        "pooling": facts.get("pooling", getattr(backend, "pooling", None)),
        "normalize": facts.get("normalize", getattr(backend, "normalize", None)),
        "max_length": facts.get("max_length", getattr(backend, "max_length", None)),
        "text": "prompt_template" if run.task.prompt_template else "question, options, context",
        "truncated_this_run": truncated,
    }
    if truncated:
        run.manifest.warnings.append(
            f"{truncated} question(s) longer than {run.manifest.embedding['max_length']} tokens were "
            "truncated (see 'truncated' in responses.jsonl)"
        )
    assemble_embeddings(run.storage, run.plan, run.task)
