"""Drive an ``Embedder``: vectors per batch, written before the records that mark them done.

Durability follows the generative drivers: each batch's vectors are stored *before* its
records, and a record is what marks a question done, so a run killed at any moment redoes at
most the batch in flight. ``embeddings.npy`` is assembled from every stored batch at the end
(``runner.artefacts.stored.assemble_embeddings``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from runner.backends.base import Embedder, GenRequest, GenResult
from runner.engine.chunks import Batches, longest_first
from runner.engine.recording import VectorRecorder
from runner.errors import OutOfMemory


@dataclass
class EmbeddingStats:
    busy_s: float = 0.0
    last_batch_s: float = 0.0
    dimension: int | None = None
    truncated: int = 0


def run_embedding(backend: Embedder, requests: list[GenRequest], recorder: VectorRecorder,
                  batches: Batches) -> EmbeddingStats:
    """Embed every request's text (``req.user``), one batch at a time."""
    stats = EmbeddingStats()
    ordered = longest_first(requests, lambda r: backend.text_length(r.user))

    def embed(chunk: list[GenRequest]) -> tuple[np.ndarray, list[dict]]:
        t = time.perf_counter()
        try:
            return backend.embed([r.user for r in chunk])
        finally:
            stats.last_batch_s = time.perf_counter() - t
            stats.busy_s += stats.last_batch_s

    for chunk, out in batches.run(ordered, embed):
        if isinstance(out, OutOfMemory):
            for req in chunk:
                recorder.store(req, GenResult(text=None, error=str(out)))
            recorder.checkpoint()
            continue
        vectors, infos = out
        stats.dimension = int(vectors.shape[1])
        recorder.store_vectors([r.question.index for r in chunk], vectors)
        for req, vec, info in zip(chunk, vectors, infos, strict=True):
            finite = bool(np.isfinite(vec).all())
            stats.truncated += bool(info["truncated"])
            recorder.store(req, GenResult(
                text=None,
                input_tokens=int(info["tokens"]),
                latency_s=round(stats.last_batch_s, 4),
                error=None if finite else "the encoder returned NaN or infinite values",
                extra={"dimension": stats.dimension, "truncated": bool(info["truncated"])},
            ))
        recorder.checkpoint()
    return stats
