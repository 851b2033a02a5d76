"""Work in chunks of a backend's batch size: longest first, halved on out-of-memory.

Longest first, because similar lengths share a batch (less padding) and an out-of-memory
error shows up on the first batch rather than after an hour. A backend that allows it
(``adaptive_batch``) gets its batch size halved on ``OutOfMemory`` and the same items again;
one that does not, or a batch of one that still does not fit, gets the error back for those
items, which are then recorded as failed and retried by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from runner.errors import OutOfMemory

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("medbench.runner")


class Sized(Protocol):
    batch_size: int
    adaptive_batch: bool


def longest_first(items: Sequence[T], length: Callable[[T], int]) -> list[T]:
    """``items`` sorted by ``length``, longest first; equal lengths keep their order."""
    return sorted(items, key=length, reverse=True)


class Batches:
    """Hands ``items`` to ``call`` in chunks of ``backend.batch_size``."""

    def __init__(self, backend: Sized):
        self.backend = backend
        #: How often the batch size was halved, for the manifest's warning.
        self.backoffs = 0

    def run(self, items: Sequence[T],
            call: Callable[[list[T]], R]) -> Iterator[tuple[list[T], R | OutOfMemory]]:
        """``(chunk, call(chunk))`` for every chunk, or ``(chunk, OutOfMemory)`` when it cannot fit."""
        backend = self.backend
        i = 0
        while i < len(items):
            chunk = list(items[i : i + max(1, backend.batch_size)])
            try:
                result: R | OutOfMemory = call(chunk)
            except OutOfMemory as e:
                if backend.adaptive_batch and len(chunk) > 1:
                    backend.batch_size = max(1, len(chunk) // 2)
                    self.backoffs += 1
                    log.warning("out of memory at batch size %d; retrying at %d", len(chunk),
                                backend.batch_size)
                    continue
                if not backend.adaptive_batch:
                    e = OutOfMemory(f"{e}; lower batch_size or set batch_size: auto")
                result = e
            yield chunk, result
            i += len(chunk)

    def warning(self) -> str | None:
        if not self.backoffs:
            return None
        return (f"out of memory {self.backoffs} time(s); batch size lowered to {self.backend.batch_size}")
