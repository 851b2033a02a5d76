"""Semantic similarity of texts: answers against references, and models against each other.

Texts are embedded with an encoder from ``runner.embeddings`` (the same code path as the
``embed`` backend): all-MiniLM-L6-v2 by default, or one of the run's own encoder models.
torch is imported only here and only when called, so ``launcher`` works without it; when the
encoder cannot be loaded the similarity columns are None and ``note`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runner.errors import InputError, MedbenchError

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")


@dataclass
class TextEncoder:
    """Embeds lists of texts into unit vectors; ``note`` holds why it could not, if it could not."""

    name: str
    spec: Any = None
    note: str | None = None
    _encoder: Any = field(default=None, repr=False)

    def embed(self, texts: list[str]) -> np.ndarray | None:
        """Unit-length float32 rows for ``texts``; None when no encoder is available."""
        if self.note is not None:
            return None
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            if self._encoder is None:
                self._encoder = _open(self.spec, self.name)
            vectors = np.asarray(self._encoder.embed(texts), dtype=np.float32)
        except (ImportError, MedbenchError, OSError) as e:
            self.note = f"similarity not computed: encoder {self.name} unavailable ({e})"
            return None
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None


def _open(spec: Any, name: str):
    from runner.embeddings import open_encoder

    return open_encoder(spec)


def resolve_encoder(name: str | None, encoder_specs: dict[str, dict[str, Any]]) -> TextEncoder | None:
    """``minilm``, or the model_dir/id of one of the run's encoders; None turns similarity off.

    ``encoder_specs`` maps each encoder model of the run to its recorded parameters.
    """
    if name is None:
        return None
    if name.lower() in MINILM_NAMES:
        from runner.embeddings import MINILM

        return TextEncoder("minilm", spec=MINILM)
    for model_dir, params in encoder_specs.items():
        if name in (model_dir, params.get("id"), params.get("name")):
            spec = {k: v for k, v in params.items()
                    if k in ("id", "path", "revision", "dtype", "pooling", "normalize", "max_length")}
            return TextEncoder(model_dir, spec=spec)
    known = ", ".join(["minilm", *encoder_specs]) or "minilm"
    raise InputError(f"--encoder {name}: not an encoder of this run; choose one of: {known}, or none")


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two arrays of unit vectors."""
    return np.clip((a * b).sum(axis=1), -1.0, 1.0)
