"""The backend seam: three small interfaces, one per way of doing the work.

- :class:`BatchGenerator` answers a batch of prompts at once (hf, echo);
- :class:`AsyncGenerator` answers one prompt per call, many calls in flight (openai, gemini);
- :class:`Embedder` turns a batch of texts into vectors (embed).

The engine (``runner.engine``) picks its driver by the interface a backend implements. A
backend only talks to its model: sorting, batching into durable chunks, out-of-memory
back-off, resume, retries, concurrency, rate limits, progress and recording live once, in the
engine, for every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runner.artefacts.records import AnswerFacts
from runner.config.backends import descriptor
from runner.plan import ModelTask
from runner.prompts import messages_for
from runner.questions import Question


@dataclass
class GenRequest:
    question: Question
    system: str | None
    user: str
    templated: bool
    prompt: Any = None  # filled by build_prompt: what is sent, as recorded


@dataclass
class GenResult(AnswerFacts):
    """One answer as the backend got it: its text, the facts every record stores
    (``AnswerFacts``: finish reason, token counts, latency, error, attempts; keywords only) and
    anything else the backend keeps (``extra``, stored beside them)."""

    text: str | None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend:
    """Common to all backends: built from a task, loaded once, describes itself.

    A backend implements one of the interfaces below, never this class alone.
    """

    def __init__(self, task: ModelTask):
        self.task = task
        self.spec: Any = task.spec
        #: Settings the backend changed or dropped, for the manifest (kept across reruns).
        self.warnings: list[str] = []

    def preflight(self) -> None:
        """Cheap checks before anything is written (keys present, files exist).

        Raise ``InputError``/``BackendUnavailable`` with a message that says how to fix it.
        """

    def load(self) -> dict[str, Any]:
        """Load weights or clients; return facts for the manifest (revision, device...)."""
        return {}

    def close(self) -> None:
        """Release memory (GPU) before the next model loads."""


class Generator(Backend, ABC):
    """A backend that writes prose answers: it says what each request is sent as."""

    #: The prompt rule used (chat, chat-folded, plain, pmc-llama, messages), for the manifest.
    prompt_rule: str = "messages"

    def build_prompt(self, req: GenRequest) -> Any:
        return messages_for(req.system, req.user)


class BatchGenerator(Generator):
    #: How many requests the engine hands over at once; results are stored after each call.
    batch_size: int = 8
    #: True when the engine may halve ``batch_size`` on ``OutOfMemory`` and try again.
    adaptive_batch: bool = False

    def auto_batch_size(self, device: str) -> int:
        """What ``batch_size: auto`` starts from on this device: the backend's descriptor says,
        so sizing a Job and running it assume the same batch."""
        profile = descriptor(self.spec.backend).local
        if profile is None:
            return type(self).batch_size
        return profile.auto_batch_gpu if device == "cuda" else profile.auto_batch_cpu

    def prompt_length(self, prompt: Any) -> int:
        """Used to sort requests so batches hold prompts of similar length."""
        return len(str(prompt))

    @abstractmethod
    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Answer a batch; one result per request, in the same order. ``OutOfMemory`` when
        the batch does not fit."""


class AsyncGenerator(Generator):
    @abstractmethod
    async def agenerate(self, request: GenRequest) -> GenResult:
        """ONE attempt at one request; raise ``TransientAPIError``, ``PermanentAPIError`` or
        ``BackendFatal`` (runner.errors) when it fails. Retries are the engine's."""

    async def aclose(self) -> None:
        """Close network clients inside the event loop that used them."""


class Embedder(Backend, ABC):
    batch_size: int = 32
    adaptive_batch: bool = True

    def text_length(self, text: str) -> int:
        """Used to sort texts so batches hold texts of similar length."""
        return len(text)

    @abstractmethod
    def embed(self, texts: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """One batch: float32 array (len(texts), dim) and per-text info (tokens, truncated).
        ``OutOfMemory`` when the batch does not fit."""
