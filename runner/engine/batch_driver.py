"""Drive a ``BatchGenerator``: prompts built, sorted longest first, answered and stored a chunk at a time."""

from __future__ import annotations

import time

from runner.backends.base import BatchGenerator, GenRequest, GenResult
from runner.engine.chunks import Batches, longest_first
from runner.engine.recording import Recorder
from runner.errors import OutOfMemory


def run_batched(backend: BatchGenerator, requests: list[GenRequest], recorder: Recorder,
                batches: Batches) -> float:
    """Answer every request; each chunk's results are stored before the next chunk starts.

    Returns the seconds spent inside the backend (generation time, for throughput).
    """
    for r in requests:
        r.prompt = backend.build_prompt(r)
    ordered = longest_first(requests, lambda r: backend.prompt_length(r.prompt))
    busy = 0.0

    def generate(chunk: list[GenRequest]) -> list[GenResult]:
        nonlocal busy
        t = time.perf_counter()
        try:
            return backend.generate(chunk)
        finally:
            busy += time.perf_counter() - t

    for chunk, results in batches.run(ordered, generate):
        if isinstance(results, OutOfMemory):
            results = [GenResult(text=None, error=str(results)) for _ in chunk]
        for req, res in zip(chunk, results, strict=True):
            recorder.store(req, res)
        recorder.checkpoint()
    return busy
