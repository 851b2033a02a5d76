"""Semantic similarity of texts: answers against references, and models against each other.

Texts are embedded with an encoder from ``runner.embeddings`` (the same code path as the
``embed`` backend): all-MiniLM-L6-v2 by default, or one of the run's own encoder models.

The default reads at most 128 word pieces of a text (``minilm``), the length all-MiniLM-L6-v2
was trained with; ``minilm-256`` keeps the model's inference default of 256. On real-length
answers the two rank models the same and agree per answer at r = 0.99+, and 128 is about
twice as fast on long answers (docs/report.md has the figures, bench/bench_encoder_choice.py
measures them).

A run made since the runner embeds answers itself (``runner.engine.answer_vectors``) holds
each model's answers' vectors, and the references', under ``<model_dir>/similarity/`` and
``similarity/``: those are read first. What they lack is read from the report's cache in the
run folder (``launcher.scoring.array_cache``), and only what neither holds is embedded. Both are keyed
by the encoder's identity (its id, settings and a fingerprint of its weights:
``runner.engine.encoder.encoder_identity``) and by each text's SHA-256, so the report never
reads vectors another encoder made. torch is imported only when something has to be embedded,
so ``launcher`` works without it; when the encoder cannot be loaded the similarity columns are
None and ``note`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from launcher.scoring.array_cache import ArrayCache, text_key
from runner.artefacts.keys import SIMILARITY_DIR
from runner.artefacts.stored import identity_hash, unpack_text_vectors
from runner.embeddings import open_encoder
from runner.engine.encoder import SIMILARITY_BATCH as BATCH_SIZE
from runner.engine.encoder import SIMILARITY_ENCODERS, SPEC_KEYS, encoder_identity
from runner.errors import InputError, MedbenchError

MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
MINILM_256 = "minilm-256"
#: Texts embedded (and cached) per step of a report.
EMBED_CHUNK = 2048
__all__ = ["BATCH_SIZE", "TextEncoder", "cosine_pairs", "resolve_encoder", "stored_vectors"]


@dataclass
class TextEncoder:
    """Embeds lists of texts into unit vectors; ``note`` holds why it could not, if it could not."""

    name: str
    spec: Any = None
    note: str | None = None
    #: How many texts the last ``vectors`` call found stored in the run by the runner, in the
    #: report's cache, and how many it embedded.
    from_run: int = 0
    from_cache: int = 0
    embedded: int = 0
    _encoder: Any = field(default=None, repr=False)

    def embed(self, texts: list[str]) -> np.ndarray | None:
        """Unit-length float32 rows for ``texts``; None when no encoder is available."""
        if self.note is not None:
            return None
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            if self._encoder is None:
                self._encoder = open_encoder(self.spec)
            vectors = np.asarray(self._encoder.embed(texts), dtype=np.float32)
        except (ImportError, MedbenchError, OSError) as e:
            self.note = f"similarity not computed: encoder {self.name} unavailable ({e})"
            return None
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    def identity(self) -> dict[str, Any] | None:
        """What the vectors depend on; None when the weights cannot be pinned down."""
        return encoder_identity(self.name, self.spec)

    def vectors(self, texts: list[str], run_dir: Path | None) -> np.ndarray | None:
        """Unit rows for distinct ``texts``: those the runner stored in the run, then the report's
        cache, embedding only what is missing.

        Missing texts are embedded ``EMBED_CHUNK`` at a time and each chunk is cached as soon as
        it exists: the tokenizer's working memory stays bounded, and a report stopped half way
        keeps what it had embedded.
        """
        cache = None
        keys = [text_key(t) for t in texts]
        found: dict[bytes, np.ndarray] = {}
        if run_dir is not None:
            ident = self.identity()
            if ident is not None:
                found = stored_vectors(run_dir, self.name, ident)
                cache = ArrayCache(run_dir, "similarity", self.name, ident)
        self.from_run = sum(1 for k in keys if k in found)
        if cache is not None and self.from_run < len(keys):
            found.update(cache.get([k for k in keys if k not in found]))
        missing = [i for i, k in enumerate(keys) if k not in found]
        out: np.ndarray | None = None
        if found:
            out = np.empty((len(texts), next(iter(found.values())).shape[0]), dtype=np.float32)
            for i, k in enumerate(keys):
                if k in found:
                    out[i] = found[k]
        for start in range(0, len(missing), EMBED_CHUNK):
            rows = missing[start : start + EMBED_CHUNK]
            fresh = self.embed([texts[i] for i in rows])
            if fresh is None:
                return None
            if out is None:
                out = np.empty((len(texts), fresh.shape[1]), dtype=np.float32)
            out[rows] = fresh
            if cache is not None:
                cache.put([keys[i] for i in rows], fresh)
                if cache.note:
                    self.note = f"similarity computed but not cached: {cache.note}"
        self.from_cache, self.embedded = len(texts) - len(missing) - self.from_run, len(missing)
        return out

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None


def stored_vectors(run_dir: Path, name: str, identity: dict[str, Any]) -> dict[bytes, np.ndarray]:
    """Every vector the runner stored in the run folder for this encoder identity, by text key:
    each model's answers (``<model_dir>/similarity/<name>-<hash>/*.npz``) and the references."""
    ident = identity_hash(identity)
    folder = f"{name}-{ident}"
    out: dict[bytes, np.ndarray] = {}
    run_dir = Path(run_dir)
    # Not the report's own .cache, whose folders have the same names.
    models = [p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    paths = [*(run_dir / SIMILARITY_DIR / folder).glob("*.npz"),
             *(p for m in models for p in (m / SIMILARITY_DIR / folder).glob("*.npz"))]
    for path in sorted(paths):
        found = unpack_text_vectors(path, ident, np.float32)  # None: damaged, or another identity
        if found is not None:
            out.update(zip(found[0], found[1], strict=True))
    return out


def resolve_encoder(name: str | None, encoder_specs: dict[str, dict[str, Any]]) -> TextEncoder | None:
    """``minilm``, ``minilm-256``, or the model_dir/id of one of the run's encoders; None: off.

    ``encoder_specs`` maps each encoder model of the run to its recorded parameters.
    """
    if name is None:
        return None
    if name.lower() in MINILM_NAMES:
        return TextEncoder("minilm", spec=SIMILARITY_ENCODERS["minilm"])
    if name.lower() == MINILM_256:
        return TextEncoder(MINILM_256, spec=SIMILARITY_ENCODERS[MINILM_256])
    for model_dir, params in encoder_specs.items():
        if name in (model_dir, params.get("id"), params.get("name")):
            spec = {k: v for k, v in params.items() if k in SPEC_KEYS}
            return TextEncoder(model_dir, spec=spec)
    known = ", ".join(["minilm", MINILM_256, *encoder_specs])
    raise InputError(f"--encoder {name}: not an encoder of this run; choose one of: {known}, or none")


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two arrays of unit vectors."""
    return np.clip((a * b).sum(axis=1), -1.0, 1.0)
