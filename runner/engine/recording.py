"""What the drivers hand their results to, and how progress is shown."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from runner.artefacts.records import ModelManifest
from runner.backends.base import GenRequest, GenResult

if TYPE_CHECKING:
    from runner.plan import ModelTask

log = logging.getLogger("medbench.runner")


class Recorder(Protocol):
    """Where a driver puts each result the moment it has it."""

    def store(self, req: GenRequest, res: GenResult) -> None:
        """Keep one result; once this returns, a killed run does not lose it."""

    def checkpoint(self) -> None:
        """Save progress others can see (the manifest's counts); called after each batch."""


class VectorRecorder(Recorder, Protocol):
    def store_vectors(self, indices: list[int], vectors: np.ndarray) -> None:
        """Keep one batch's vectors; called before the records that say they exist."""


class Progress(Protocol):
    def start(self, task: ModelTask, total: int, done: int) -> None: ...
    def advance(self, n: int, tokens: int) -> None: ...

    def note(self, text: str) -> None:
        """What the model is waiting for (a rate-limit pause, a long retry), shown until the
        next note; ``""`` when the wait is over. The text may quote a model id or a question
        id: show it as plain text, never as markup."""

    def finish(self, manifest: ModelManifest) -> None: ...


class NullProgress:
    """Progress as log lines at start and end, and when the model has to wait."""

    name = ""

    def start(self, task: ModelTask, total: int, done: int) -> None:
        self.name = task.model_dir
        log.info("%s: %d questions, %d already done", task.model_dir, total, done)

    def advance(self, n: int, tokens: int) -> None:
        pass

    def note(self, text: str) -> None:
        if text:
            log.info("%s: %s", self.name, text)

    def finish(self, manifest: ModelManifest) -> None:
        log.info("%s: %s (%d/%d, %d errors)", manifest.model_dir, manifest.status,
                 manifest.done, manifest.total, manifest.errors)
