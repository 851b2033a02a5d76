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

from runner.config import EmbedModel

# The encoder lives in the engine, where a model's run embeds its own answers at its end.
from runner.engine.encoder import MINILM, Encoder, as_spec, open_encoder

__all__ = ["MINILM", "Encoder", "as_spec", "cosine_rows", "embed_texts", "open_encoder"]


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
