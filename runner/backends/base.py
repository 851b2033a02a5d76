"""The backend seam: one small class per kind of work.

A backend only talks to its model. Sorting, batching into durable chunks, resume, retries,
concurrency, rate limits, progress and recording live once, in ``runner.execute`` and
``runner.api_runner``, for every backend.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runner.plan import ModelTask
from runner.questions import Question


@dataclass
class GenRequest:
    question: Question
    system: str | None
    user: str
    templated: bool
    prompt: Any = None  # filled by Backend.build_prompt: what is sent, as recorded


@dataclass
class GenResult:
    text: str | None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Backend:
    """Common to all backends: built from a task, loaded once, describes itself."""

    kind = "generate"
    #: True for backends whose ``agenerate`` is driven concurrently by the API runner.
    is_async = False

    def __init__(self, task: ModelTask):
        self.task = task
        self.spec = task.spec

    def preflight(self) -> None:
        """Cheap checks before anything is written (keys present, files exist).

        Raise ``InputError``/``BackendUnavailable`` with a message that says how to fix it.
        """

    def load(self) -> dict[str, Any]:
        """Load weights or clients; return facts for the manifest (revision, device...)."""
        return {}

    def close(self) -> None:
        """Release memory (GPU) before the next model loads."""


class GenerateBackend(Backend):
    #: How many requests the runner hands over at once; results are stored after each call.
    batch_size: int = 8
    #: The prompt rule used (chat, chat-folded, plain, pmc-llama, messages), for the manifest.
    prompt_rule: str = "messages"

    def build_prompt(self, req: GenRequest) -> Any:
        from runner.prompts import messages_for

        return messages_for(req.system, req.user)

    def prompt_length(self, prompt: Any) -> int:
        """Used to sort requests so batches hold prompts of similar length."""
        return len(str(prompt))

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Answer a batch; one result per request, in the same order."""
        raise TypeError(f"{type(self).__name__} is asynchronous; use agenerate")

    async def agenerate(self, request: GenRequest) -> GenResult:
        raise TypeError(f"{type(self).__name__} is synchronous; use generate")


class EmbedBackend(Backend):
    kind = "embed"
    batch_size: int = 32

    @abstractmethod
    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """float32 array (len(texts), dim) and per-text info (tokens, truncated)."""
